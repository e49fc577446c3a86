"""The pager: which blocks are physically backed, and when they are (un)mapped.

The front (``KVCache``) decides how many blocks each slot is *owed*; the pager decides
which blocks are *resident*. The two differ on purpose:

* **Deferred reclamation.** A freed slot keeps its pages mapped, so the next request that
  takes the slot reuses them without a driver call. Those pages go back to the pool only
  when someone needs them (or on an explicit ``reclaim``).
* **Map-ahead.** ``reserve_ahead`` queues growth the engine expects in the next steps; a
  background thread maps it so that ``grow`` on the step's critical path finds the pages
  already there.

Physical residency never exceeds ``num_blocks``: pages of the pool are either free,
resident under a slot, or in transit in one driver call.

Driver calls run with the lock released (they release the GIL too), so the main thread can
keep scheduling while the worker maps. A slot with a call in flight is ``busy``; every
operation on a slot waits for its previous one, and only the prefix ``[0, mapped)`` of a
slot is ever resident, so a resident prefix stays valid while a call extends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from vattention.errors import VAttentionError
from vattention.views import CacheShape

# A worker call maps at most this many blocks, so that the main thread, which may need
# the same slot, never waits long behind speculative work.
_AHEAD_BATCH_UNITS = 4


class Mapper(Protocol):
    """Memory behind the cache, addressed by page number (the same page in every reservation)."""

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def map(self, first_page: int, count: int) -> None: ...
    def unmap(self, first_page: int, count: int) -> None: ...
    def close(self) -> None: ...


@dataclass
class PagerCounters:
    blocks_mapped_sync: int = 0  # mapped on the caller's thread inside grow()
    blocks_mapped_ahead: int = 0  # mapped by the background worker
    blocks_unmapped: int = 0
    sync_grows: int = 0  # grow() calls that had to wait for mapping
    map_wait_seconds: float = 0.0  # time grow() spent waiting for mapping


class Pager:
    def __init__(self, mapper: Mapper, shape: CacheShape, num_blocks: int) -> None:
        self._mapper = mapper
        self._shape = shape
        self.num_blocks = num_blocks
        slots = shape.max_slots
        self._mapped = [0] * slots  # resident prefix of each slot, in blocks
        self._need = [0] * slots  # blocks the front has promised each live slot
        self._live = [False] * slots
        self._busy = [False] * slots
        self._free = num_blocks  # pool blocks neither resident nor in transit
        self._ahead: dict[int, int] = {}  # slot -> target blocks, in request order
        self._urgent = 0  # callers blocked in grow(); the worker yields to them
        self._worker: threading.Thread | None = None
        self._worker_active = False
        self._stop = False
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self.counters = PagerCounters()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mapper.layer(i)

    # -- slot lifecycle ---------------------------------------------------------------------
    def open_slot(self, slot: int) -> None:
        with self._cond:
            self._raise_worker_error()
            self._live[slot] = True
            self._need[slot] = 0

    def close_slot(self, slot: int) -> None:
        """The slot's owner is gone; its pages stay resident until someone needs them."""
        with self._cond:
            self._live[slot] = False
            self._need[slot] = 0
            self._ahead.pop(slot, None)
            self._cond.notify_all()

    def grow(self, slot: int, blocks: int) -> None:
        """Return once blocks ``[0, blocks)`` of ``slot`` are resident.

        The front has already checked the budget, so room always exists once speculative
        and cached pages are taken back.
        """
        with self._cond:
            self._raise_worker_error()
            self._need[slot] = max(self._need[slot], blocks)
            if self._mapped[slot] >= blocks:
                return
            start = time.perf_counter()
            self._urgent += 1
            try:
                while self._mapped[slot] < blocks:
                    if self._busy[slot]:
                        self._cond.wait()
                        continue
                    n = blocks - self._mapped[slot]
                    if self._free < n:
                        if self._reclaim_one(n - self._free, steal_ahead=True):
                            continue
                        if not any(self._busy):
                            raise VAttentionError(
                                f"pager accounting broken: slot {slot} needs {n} blocks, "
                                f"{self._free} free and nothing to reclaim"
                            )
                        self._cond.wait()
                        continue
                    self._map_locked(slot, n)
                    self.counters.blocks_mapped_sync += n
            finally:
                self._urgent -= 1
                self.counters.sync_grows += 1
                self.counters.map_wait_seconds += time.perf_counter() - start
                self._cond.notify_all()

    # -- map-ahead --------------------------------------------------------------------------
    def reserve_ahead(self, slot: int, blocks: int) -> None:
        """Ask the worker to make ``[0, blocks)`` of a live slot resident soon."""
        with self._cond:
            self._raise_worker_error()
            if not self._live[slot] or self._mapped[slot] >= blocks:
                return
            if blocks <= self._ahead.get(slot, 0):
                return
            self._ahead[slot] = blocks
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._worker_loop, name="vattention-map-ahead", daemon=True
                )
                self._worker.start()
            self._cond.notify_all()

    def wait_ahead(self, timeout: float | None = None) -> bool:
        """Block until queued map-ahead work is done; False if ``timeout`` ran out first."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._error is not None or (not self._ahead and not self._worker_active),
                timeout,
            )
            self._raise_worker_error()
            return done

    def reclaim(self) -> int:
        """Unmap every page cached under a free slot now; returns the blocks given back."""
        total = 0
        with self._cond:
            while True:
                done = self._reclaim_one(self.num_blocks, steal_ahead=False)
                if done:
                    total += done
                elif any(b and not live for b, live in zip(self._busy, self._live, strict=True)):
                    self._cond.wait()
                else:
                    return total

    # -- state ------------------------------------------------------------------------------
    def residency(self) -> dict[str, int | float]:
        with self._cond:
            resident = sum(self._mapped)
            cached = sum(m for m, live in zip(self._mapped, self._live, strict=True) if not live)
            ahead = sum(
                max(0, m - n)
                for m, n, live in zip(self._mapped, self._need, self._live, strict=True)
                if live
            )
            return {
                "resident_blocks": resident,
                "resident_bytes": resident * self._shape.geometry.block_bytes,
                "cached_blocks": cached,
                "ahead_blocks": ahead,
                "in_transit_blocks": self.num_blocks - self._free - resident,
                **asdict(self.counters),
            }

    def resident_blocks(self, slot: int) -> int:
        with self._cond:
            return self._mapped[slot]

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join()
        self._mapper.close()

    # -- internals (lock held) ----------------------------------------------------------------
    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise VAttentionError("background mapping failed") from self._error

    def _page(self, slot: int, block: int) -> int:
        return self._shape.page_of(slot, block)

    def _unlocked(
        self, slot: int, call: Callable[[int, int], None], first: int, count: int
    ) -> None:
        self._busy[slot] = True
        self._cond.release()
        try:
            call(first, count)
        finally:
            self._cond.acquire()
            self._busy[slot] = False
            self._cond.notify_all()

    def _map_locked(self, slot: int, n: int) -> None:
        first = self._mapped[slot]
        self._free -= n
        try:
            self._unlocked(slot, self._mapper.map, self._page(slot, first), n)
        except BaseException:
            self._free += n
            raise
        self._mapped[slot] = first + n

    def _unmap_locked(self, slot: int, n: int) -> None:
        # Shrink first: the blocks leave the resident prefix before the call starts, and
        # join the pool only once the driver has really let them go.
        first = self._mapped[slot] - n
        self._mapped[slot] = first
        self._unlocked(slot, self._mapper.unmap, self._page(slot, first), n)
        self._free += n
        self.counters.blocks_unmapped += n

    def _reclaim_one(self, want: int, steal_ahead: bool) -> int:
        """Unmap up to ``want`` blocks from one victim; returns how many (0: no victim).

        Cached pages of free slots go first, highest slot first (the front hands out the
        lowest free slot, so high slots are the least likely to be reused soon). Then, if
        allowed, pages mapped ahead beyond a live slot's need.
        """
        for slot in range(len(self._mapped) - 1, -1, -1):
            if not self._live[slot] and self._mapped[slot] and not self._busy[slot]:
                n = min(want, self._mapped[slot])
                self._unmap_locked(slot, n)
                return n
        if steal_ahead:
            for slot in range(len(self._mapped) - 1, -1, -1):
                spare = self._mapped[slot] - self._need[slot]
                if self._live[slot] and spare > 0 and not self._busy[slot]:
                    n = min(want, spare)
                    self._unmap_locked(slot, n)
                    return n
        return 0

    def _worker_loop(self) -> None:
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._stop or (self._ahead and not self._urgent))
                if self._stop:
                    return
                slot, target = next(iter(self._ahead.items()))
                if not self._live[slot] or self._mapped[slot] >= target:
                    self._ahead.pop(slot, None)
                    self._cond.notify_all()
                    continue
                if self._busy[slot]:
                    self._cond.wait()
                    continue
                n = min(target - self._mapped[slot], _AHEAD_BATCH_UNITS)
                self._worker_active = True
                try:
                    if self._free < n and self._reclaim_one(n - self._free, steal_ahead=False):
                        continue  # re-read the state: the lock was released meanwhile
                    n = min(n, self._free)
                    if n == 0:
                        self._ahead.pop(slot, None)  # no room without stealing: leave it to grow()
                        continue
                    self._map_locked(slot, n)
                    self.counters.blocks_mapped_ahead += n
                except Exception as exc:  # surfaced on the caller's next call
                    self._error = exc
                    self._ahead.clear()
                    return
                finally:
                    self._worker_active = False
                    self._cond.notify_all()
