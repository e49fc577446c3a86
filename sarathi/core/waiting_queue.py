"""The order of the scheduler's queues under each scheduling policy (vLLM's
``--scheduling-policy``), and the turns that keep one client from starving the others.

Each request gets a turn when it is queued (``Turns``: start-time fair queuing over clients,
a request costing its samples): the later of the queue's clock, which is the turn of the
last sequence admitted, and where its client's previous requests end. One client's requests
therefore take consecutive turns, and a request from a client with nothing queued is next
in line however many the others have queued. With one client (offline generation, a server
with one caller) turns follow arrival and both policies are vLLM's.

``fcfs``: waiting and running sequences by turn. ``priority``: by (request priority, turn),
lower first. A preempted sequence goes back by the same key: its turn was reached, so it
waits ahead of everything queued after it. The running list's last sequence is the one to
preempt first under either policy: the latest turn, or the latest of the worst priority.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Protocol

from sarathi.sequence import Request, Sequence


def turn_order(seq: Sequence) -> tuple[int, int]:
    # The seq id breaks ties (a request's n samples share a turn), so no two sequences share
    # a key and removal by key finds the very one.
    return (seq.request.turn, seq.seq_id)


def priority_order(seq: Sequence) -> tuple[int, int, int]:
    return (seq.request.priority, seq.request.turn, seq.seq_id)


class WaitingQueue(Protocol):
    """What the scheduler does with its waiting sequences."""

    def append(self, seq: Sequence) -> None: ...

    def appendleft(self, seq: Sequence) -> None: ...

    def remove(self, seq: Sequence) -> None: ...

    def __getitem__(self, index: int) -> Sequence: ...

    def __delitem__(self, index: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Sequence]: ...


class SortedWaiting:
    """Waiting sequences sorted by ``key``. A sorted list rather than a heap: admission walks
    it in order past the samples that wait for a sibling and removes the one admitted where
    it stands, and an abort removes one by bisection; each insertion and removal is a binary
    search and a move of pointers, never a sort."""

    def __init__(self, key: Callable[[Sequence], tuple]) -> None:
        self._key = key
        self._items: list[Sequence] = []

    def append(self, seq: Sequence) -> None:
        bisect.insort(self._items, seq, key=self._key)

    # A preempted sequence goes back by its key too, not to the very front: a request of a
    # better priority (or an earlier turn) that waits meanwhile stays ahead of it.
    appendleft = append

    def remove(self, seq: Sequence) -> None:
        i = bisect.bisect_left(self._items, self._key(seq), key=self._key)
        if i == len(self._items) or self._items[i] is not seq:
            raise ValueError("the sequence is not waiting")
        del self._items[i]

    def __getitem__(self, index: int) -> Sequence:
        return self._items[index]

    def __delitem__(self, index: int) -> None:
        del self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self._items)


class Turns:
    """Start-time fair queuing of requests over their clients (``Request.client``)."""

    def __init__(self) -> None:
        self.clock = 0  # the turn of the latest sequence admitted
        # Per client, the turn after its queued requests; clients whose requests all had
        # their turn are dropped now and then (a new request of theirs starts at the clock).
        self._next: dict[str | None, int] = {}
        self._prune_at = 64

    def assign(self, request: Request) -> None:
        """Give a request just queued its turn; each of its samples costs one."""
        turn = max(self.clock, self._next.get(request.client, 0))
        request.turn = turn
        self._next[request.client] = turn + request.params.n
        if len(self._next) > self._prune_at:
            self._next = {c: t for c, t in self._next.items() if t > self.clock}
            self._prune_at = max(64, 2 * len(self._next))

    def admitted(self, seq: Sequence) -> None:
        self.clock = max(self.clock, seq.request.turn)


def queue_order(policy: str) -> tuple[WaitingQueue, Callable[[Sequence], tuple]]:
    """The waiting queue and the running list's sort key of ``policy``."""
    if policy == "priority":
        return SortedWaiting(priority_order), priority_order
    if policy == "fcfs":
        return SortedWaiting(turn_order), turn_order
    raise ValueError(f"unknown scheduling policy {policy!r} (fcfs or priority)")
