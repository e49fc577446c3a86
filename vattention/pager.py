"""The pager: which frames back which blocks, and when they are (un)mapped.

A *frame* is the physical memory behind one block (one page in every reservation),
numbered ``0..num_blocks-1``. The front (``KVCache``) decides how many blocks each slot is
*owed*; the pager decides which frames are *resident* under each slot. The same frame may
be resident under several slots at once (at the same block index): that is how a cached
prompt prefix is shared without copying. The two views differ on purpose:

* **Deferred reclamation.** A freed slot keeps its frames mapped, so the next request that
  takes the slot reuses them without a driver call. They go back to the pool only when
  someone needs them (or on an explicit ``reclaim``). A new owner keeps only what it may
  write: the prefix it shares, then private frames (mapped nowhere else, not held); a
  frame held by the prefix cache or resident under another slot is unmapped first.
* **Map-ahead.** ``reserve_ahead`` queues growth the engine expects in the next steps; a
  background thread maps it so that ``grow`` on the step's critical path finds the frames
  already there.

Every frame is free, resident under one or more slots, held (the prefix cache's
reference, which keeps its content alive without any slot), or in transit in one driver
call. A frame becomes free, and its memory is discarded, once no slot maps it and no hold
remains.

Driver calls run with the lock released (they release the GIL too), so the main thread can
keep scheduling while the worker maps. A slot with a call in flight is ``busy``; every
operation on a slot waits for its previous one, and only the prefix ``[0, mapped)`` of a
slot is ever resident, so a resident prefix stays valid while a call extends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from vattention.errors import VAttentionError
from vattention.views import CacheShape

# A worker call maps at most this many blocks, so that the main thread, which may need
# the same slot, never waits long behind speculative work.
_AHEAD_BATCH_UNITS = 4


class Fence(Protocol):
    def done(self) -> bool: ...
    def wait(self) -> None: ...


class Mapper(Protocol):
    """Memory behind the cache, addressed by page number (the same page in every
    reservation) and frame number (the memory of one page in every reservation)."""

    shares_frames: bool  # whether one frame can be mapped at several pages at once

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def map(self, first_page: int, frames: Sequence[int]) -> None:
        """Map ``frames[i]`` at page ``first_page + i`` in every reservation."""
        ...

    def fence(self) -> Fence | None:
        """A mark after all work queued so far that may touch mapped pages (None where
        that work is synchronous)."""
        ...

    def unmap(self, first_page: int, count: int, keep: Collection[int] = ()) -> None:
        """Unmap the pages; the frames in ``keep`` (held) must keep their content. The
        caller has made sure no queued work touches the pages (the pager waits on the
        fence of the last step that used them), so the mapper never waits for the device."""
        ...

    def discard(self, frames: Sequence[int]) -> None:
        """The frames' contents are no longer needed (none of them is mapped anywhere)."""
        ...

    def close(self) -> None: ...


@dataclass
class PagerCounters:
    blocks_mapped_sync: int = 0  # mapped on the caller's thread inside grow()
    blocks_mapped_ahead: int = 0  # mapped by the background worker
    blocks_mapped_shared: int = 0  # shared frames mapped by open_slot()
    blocks_unmapped: int = 0
    sync_grows: int = 0  # grow() calls that had to wait for mapping
    map_wait_seconds: float = 0.0  # time grow() spent waiting for mapping


class Pager:
    def __init__(self, mapper: Mapper, shape: CacheShape, num_blocks: int) -> None:
        self._mapper = mapper
        self._shape = shape
        self.num_blocks = num_blocks
        slots = shape.max_slots
        self._frames: list[list[int]] = [[] for _ in range(slots)]  # resident, by block
        self._need = [0] * slots  # blocks the front has promised each live slot
        self._live = [False] * slots
        self._busy = [False] * slots
        # Per slot: the work queued before its last owner left, which may still touch the
        # frames left resident (kept by the next owner too, while private). Unmapping
        # waits for that instead of for everything queued since.
        self._fences: list[Fence | None] = [None] * slots
        self._maps = [0] * num_blocks  # slots (live or dead) a frame is resident under
        self._held = [False] * num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # not mapped, not held; pop() lowest
        self._discarding = 0  # frames on their way to the free list
        self._num_held = 0
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
    def open_slot(self, slot: int, shared: Sequence[int] = ()) -> None:
        """A new owner takes ``slot``; blocks ``[0, len(shared))`` are backed by ``shared``.

        What the previous owner left resident is kept where it matches ``shared`` and,
        past it, while it is private: the new owner writes there, so a frame that is held
        or resident under another slot must not stay.
        """
        with self._cond:
            self._raise_worker_error()
            while self._busy[slot]:
                self._cond.wait()
            # Live from here on: reclamation must not take the prefix kept below while
            # the lock is released for the driver calls.
            self._live[slot] = True
            self._need[slot] = len(shared)
            try:
                frames = self._frames[slot]
                keep = 0
                while keep < min(len(frames), len(shared)) and frames[keep] == shared[keep]:
                    keep += 1
                if keep == len(shared):
                    while keep < len(frames) and self._private(frames[keep]):
                        keep += 1
                if keep < len(frames):
                    self._unmap_locked(slot, len(frames) - keep)
                if keep < len(shared):
                    self._map_locked(slot, list(shared[keep:]))
                    self.counters.blocks_mapped_shared += len(shared) - keep
            except BaseException:
                self._live[slot] = False
                self._need[slot] = 0
                raise

    def best_slot(self, candidates: Sequence[int], shared: Sequence[int] = ()) -> int:
        """Of the free ``candidates`` (best first), the one whose resident frames begin with
        the longest run of ``shared`` (a freed slot that served the same prefix opens with
        no driver call); among equals, one whose last owner's work is done (unmapping
        what the new owner cannot keep need not wait for the step in flight)."""
        with self._cond:
            best, score = candidates[0], (-1, False)
            for slot in candidates:
                frames = self._frames[slot]
                n = 0
                while n < min(len(frames), len(shared)) and frames[n] == shared[n]:
                    n += 1
                fence = self._fences[slot]
                candidate = (n, fence is None or fence.done())
                if candidate > score:
                    best, score = slot, candidate
                    if candidate == (len(shared), True):
                        break
            return best

    def close_slot(self, slot: int) -> None:
        """The slot's owner is gone; its frames stay resident until someone needs them."""
        with self._cond:
            self._live[slot] = False
            self._need[slot] = 0
            self._ahead.pop(slot, None)
            self._fences[slot] = self._mapper.fence()
            self._cond.notify_all()

    def grow(self, slot: int, blocks: int) -> None:
        """Return once blocks ``[0, blocks)`` of ``slot`` are resident.

        The front has already checked the budget, so room always exists once speculative
        and cached frames are taken back.
        """
        with self._cond:
            self._raise_worker_error()
            self._need[slot] = max(self._need[slot], blocks)
            if len(self._frames[slot]) >= blocks:
                return
            start = time.perf_counter()
            self._urgent += 1
            try:
                while len(self._frames[slot]) < blocks:
                    if self._busy[slot]:
                        self._cond.wait()
                        continue
                    n = blocks - len(self._frames[slot])
                    if len(self._free) < n:
                        if self._reclaim_one(n - len(self._free), steal_ahead=True):
                            continue
                        if not any(self._busy) and not self._discarding:
                            raise VAttentionError(
                                f"pager accounting broken: slot {slot} needs {n} blocks, "
                                f"{len(self._free)} free and nothing to reclaim"
                            )
                        self._cond.wait()
                        continue
                    self._map_locked(slot, [self._free.pop() for _ in range(n)])
                    self.counters.blocks_mapped_sync += n
            finally:
                self._urgent -= 1
                self.counters.sync_grows += 1
                self.counters.map_wait_seconds += time.perf_counter() - start
                self._cond.notify_all()

    def frames(self, slot: int, start: int, end: int) -> list[int]:
        """The frames resident under blocks ``[start, end)`` of ``slot``."""
        with self._cond:
            frames = self._frames[slot]
            if end > len(frames):
                raise VAttentionError(
                    f"blocks [{len(frames)}, {end}) of slot {slot} are not resident"
                )
            return frames[start:end]

    # -- holds ------------------------------------------------------------------------------
    def hold(self, frame: int) -> None:
        """Keep ``frame`` (resident now) out of the pool until ``release``, slots or not."""
        with self._cond:
            if self._held[frame]:
                raise VAttentionError(f"frame {frame} is already held")
            if not self._maps[frame]:
                raise VAttentionError(f"frame {frame} is not resident under any slot")
            self._held[frame] = True
            self._num_held += 1

    def release(self, frame: int) -> None:
        with self._cond:
            if not self._held[frame]:
                raise VAttentionError(f"frame {frame} is not held")
            self._held[frame] = False
            self._num_held -= 1
            if not self._maps[frame]:
                self._discard_locked([frame])

    # -- map-ahead --------------------------------------------------------------------------
    def reserve_ahead(self, slot: int, blocks: int) -> None:
        """Ask the worker to make ``[0, blocks)`` of a live slot resident soon."""
        with self._cond:
            self._raise_worker_error()
            if not self._live[slot] or len(self._frames[slot]) >= blocks:
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
        """Unmap every frame resident under a free slot now; returns the frames freed
        (a held frame, or one another slot maps, stays out of the pool)."""
        total = 0
        with self._cond:
            while True:
                victims = [
                    s
                    for s, frames in enumerate(self._frames)
                    if frames and not self._live[s] and not self._busy[s]
                ]
                if victims:
                    total += self._unmap_locked(victims[-1], len(self._frames[victims[-1]]))
                elif any(b and not live for b, live in zip(self._busy, self._live, strict=True)):
                    self._cond.wait()
                else:
                    return total

    # -- state ------------------------------------------------------------------------------
    def residency(self) -> dict[str, int | float]:
        with self._cond:
            # Every frame is free, on its way to the free list, or resident (mapped or held).
            resident = self.num_blocks - len(self._free) - self._discarding
            cached = sum(
                len(f) for f, live in zip(self._frames, self._live, strict=True) if not live
            )
            ahead = sum(
                max(0, len(f) - n)
                for f, n, live in zip(self._frames, self._need, self._live, strict=True)
                if live
            )
            return {
                "resident_blocks": resident,
                "resident_bytes": resident * self._shape.geometry.block_bytes,
                "cached_blocks": cached,
                "ahead_blocks": ahead,
                "in_transit_blocks": self._discarding,
                "frames_held": self._num_held,
                **asdict(self.counters),
            }

    def resident_blocks(self, slot: int) -> int:
        with self._cond:
            return len(self._frames[slot])

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

    def _private(self, frame: int) -> bool:
        """Resident under one slot only and not held: its slot may write it."""
        return self._maps[frame] == 1 and not self._held[frame]

    def _unlocked(self, slot: int, call: Callable[[], None]) -> None:
        self._busy[slot] = True
        self._cond.release()
        try:
            call()
        finally:
            self._cond.acquire()
            self._busy[slot] = False
            self._cond.notify_all()

    def _map_locked(self, slot: int, frames: list[int]) -> None:
        """Map ``frames`` after the slot's resident prefix; fresh ones come off the free list
        (the caller pops them), shared ones are in use already."""
        first = len(self._frames[slot])
        page = self._page(slot, first)
        for f in frames:
            self._maps[f] += 1
        try:
            self._unlocked(slot, lambda: self._mapper.map(page, frames))
        except BaseException:
            for f in frames:
                self._maps[f] -= 1
            # Never mapped, so never written: straight back to the pool.
            self._free.extend(f for f in frames if not self._maps[f] and not self._held[f])
            raise
        self._frames[slot].extend(frames)

    def _unmap_locked(self, slot: int, n: int) -> int:
        """Unmap the last ``n`` resident blocks of ``slot``; returns the frames freed.

        Only blocks that no kernel of the slot's current owner has used are ever unmapped:
        a closed slot's, those a new owner replaces, and those mapped ahead of a live
        owner's need (its steps only touch blocks it was promised). Kernels of its previous
        owner may still touch them (a private frame the new owner kept), so the call waits
        for the fence laid when that owner left, not for everything queued since."""
        # Shrink first: the blocks leave the resident prefix before the call starts, and
        # their frames count as mapped until the driver has really let them go.
        frames = self._frames[slot]
        first = len(frames) - n
        gone = frames[first:]
        del frames[first:]
        page = self._page(slot, first)
        keep = {f for f in gone if self._held[f]}
        fence = self._fences[slot]

        def unmap() -> None:
            if fence is not None:
                fence.wait()
            self._mapper.unmap(page, n, keep)

        self._unlocked(slot, unmap)
        self.counters.blocks_unmapped += n
        for f in gone:
            self._maps[f] -= 1
        freed = [f for f in gone if not self._maps[f] and not self._held[f]]
        self._discard_locked(freed)
        return len(freed)

    def _discard_locked(self, frames: list[int]) -> None:
        """Give the memory of frames nobody maps or holds back, then pool them."""
        if not frames:
            return
        self._discarding += len(frames)
        self._cond.release()
        try:
            self._mapper.discard(frames)
        finally:
            self._cond.acquire()
            self._discarding -= len(frames)
            # Pooled even if discarding failed: the frames are unused either way.
            self._free.extend(frames)
            self._cond.notify_all()

    def _reclaim_one(self, want: int, steal_ahead: bool) -> int:
        """Unmap blocks from one victim to free up to ``want`` frames; returns the blocks
        unmapped (0: no victim).

        Frames cached under free slots go first, highest slot first (the front prefers the
        lowest free slot, so high slots are the least likely to be reused soon), taking
        the shortest tail that frees ``want`` frames. Then, if allowed, frames mapped ahead
        beyond a live slot's need. Last, frames that free slots share with each other:
        unmapping one copy frees nothing yet, but brings the last copy closer. Held frames
        never free by unmapping, so they are left where they are.
        """
        dead = [
            s
            for s in range(len(self._frames) - 1, -1, -1)
            if not self._live[s] and self._frames[s] and not self._busy[s]
        ]
        for slot in dead:
            frames = self._frames[slot]
            freeing, n = 0, 0
            for i in range(len(frames) - 1, -1, -1):
                if self._private(frames[i]):
                    freeing += 1
                    n = len(frames) - i
                    if freeing == want:
                        break
            if n:
                self._unmap_locked(slot, n)
                return n
        if steal_ahead:
            for slot in range(len(self._frames) - 1, -1, -1):
                spare = len(self._frames[slot]) - self._need[slot]
                if self._live[slot] and spare > 0 and not self._busy[slot]:
                    n = min(want, spare)
                    self._unmap_locked(slot, n)
                    return n
        for slot in dead:
            frames = self._frames[slot]
            unheld = [i for i, f in enumerate(frames) if not self._held[f]]
            if unheld:
                n = len(frames) - unheld[0]
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
                if not self._live[slot] or len(self._frames[slot]) >= target:
                    self._ahead.pop(slot, None)
                    self._cond.notify_all()
                    continue
                if self._busy[slot]:
                    self._cond.wait()
                    continue
                n = min(target - len(self._frames[slot]), _AHEAD_BATCH_UNITS)
                self._worker_active = True
                try:
                    if len(self._free) < n and self._reclaim_one(
                        n - len(self._free), steal_ahead=False
                    ):
                        continue  # re-read the state: the lock was released meanwhile
                    n = min(n, len(self._free))
                    if n == 0:
                        self._ahead.pop(slot, None)  # no room without stealing: leave it to grow()
                        continue
                    self._map_locked(slot, [self._free.pop() for _ in range(n)])
                    self.counters.blocks_mapped_ahead += n
                except Exception as exc:  # surfaced on the caller's next call
                    self._error = exc
                    self._ahead.clear()
                    return
                finally:
                    self._worker_active = False
                    self._cond.notify_all()
