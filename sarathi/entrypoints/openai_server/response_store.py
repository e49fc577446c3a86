"""Stored responses of the Responses API: finished responses kept in memory by id, for
``GET /v1/responses/{id}``, its input items, and ``previous_response_id``.

Bounded by a count and by bytes, least recently used first out. An entry is kept as JSON
text (the response, and the input items of the whole conversation it continued), so its
size is what it holds, not an estimate of Python objects' overhead, and a later turn can
rebuild its history from this one entry even when the responses before it were evicted.
The store lives in one server process: it is lost on restart and not shared by replicas.

The routes run on the event loop and the bodies are built in worker threads, so every
operation holds a lock; none does more under it than dictionary work.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_MB = 512


@dataclass(frozen=True)
class StoredResponse:
    """One stored response: its JSON, and the JSON list of the conversation's input items
    (each with its ``id``) that it answered."""

    response_json: bytes
    input_items_json: bytes

    @property
    def size(self) -> int:
        return len(self.response_json) + len(self.input_items_json)


class ResponseStore:
    """Responses by id, at most ``max_entries`` of them and ``max_bytes`` of JSON in all;
    past either bound the least recently stored or read go first. Either bound 0: the store
    is disabled (nothing is kept)."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_MB << 20
    ):
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("the response store's bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def fits(self, size: int) -> bool:
        """Whether an entry of ``size`` bytes can be stored at all (with every other evicted)."""
        return self.enabled and size <= self.max_bytes

    def put(self, response_id: str, entry: StoredResponse) -> bool:
        """Store ``entry`` (replacing one under the same id), evicting the least recently
        used to make room. False, and nothing stored, when it is larger than the store."""
        if not self.fits(entry.size):
            return False
        with self._lock:
            old = self._entries.pop(response_id, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[response_id] = entry
            self._bytes += entry.size
            self._evict()
        return True

    def update_response(self, response_id: str, response_json: bytes) -> bool:
        """Replace a stored entry's response, its input items unchanged (a background
        response's status as it runs). False when the entry is gone or would not fit."""
        with self._lock:
            old = self._entries.get(response_id)
            if old is None:
                return False
            entry = StoredResponse(response_json, old.input_items_json)
            if not self.fits(entry.size):
                return False
            self._entries[response_id] = entry
            self._entries.move_to_end(response_id)
            self._bytes += entry.size - old.size
            self._evict()
        return True

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
            self.evictions += 1

    def get(self, response_id: str) -> StoredResponse | None:
        """The entry, now the most recently used; None if unknown or evicted."""
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is not None:
                self._entries.move_to_end(response_id)
            return entry

    def __contains__(self, response_id: object) -> bool:
        """Whether an entry is stored under ``response_id`` (its recency left as it was)."""
        with self._lock:
            return response_id in self._entries

    def delete(self, response_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(response_id, None)
            if entry is None:
                return False
            self._bytes -= entry.size
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes_used(self) -> int:
        with self._lock:
            return self._bytes
