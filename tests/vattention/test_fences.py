"""Slot fences, on the host with fences the test controls: unmapping a freed slot waits for
the work its last owner queued (not for everything), a new owner prefers a slot whose last
owner's work is done, and pages taken back from a live slot wait for its previous owner's
work only. The GPU test with real events is tests/vattention/test_cuda.py."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
from small_caches import small_cache

from vattention import KVCache
from vattention.pager import Mapper


@dataclass
class Fence:
    finished: bool = False
    waited: int = 0

    def done(self) -> bool:
        return self.finished

    def wait(self) -> None:
        self.waited += 1
        self.finished = True


@dataclass
class FencingMapper:
    """The host mapper, with a fence per call the test can finish, and a log of unmaps."""

    inner: Mapper
    fences: list[Fence] = field(default_factory=list)
    unmaps: list[tuple[int, int]] = field(default_factory=list)
    shares_frames: bool = True

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.layer(i)

    def map(self, first_page: int, frames: Sequence[int]) -> None:
        self.inner.map(first_page, frames)

    def fence(self) -> Fence:
        self.fences.append(Fence())
        return self.fences[-1]

    def unmap(self, first_page: int, count: int, keep: Collection[int] = ()) -> None:
        self.unmaps.append((first_page, count))
        self.inner.unmap(first_page, count, keep)

    def discard(self, frames: Sequence[int]) -> None:
        self.inner.discard(frames)

    def close(self) -> None:
        self.inner.close()


def _cache(budget_blocks: int | None = None) -> tuple[KVCache, FencingMapper]:
    cache = small_cache(layout="mega", budget_blocks=budget_blocks, max_slots=3)
    pager = cache._pager
    assert pager is not None
    mapper = FencingMapper(pager._mapper)
    pager._mapper = mapper
    return cache, mapper


def test_a_new_owner_passes_over_a_slot_whose_last_work_still_runs() -> None:
    cache, mapper = _cache()
    with cache:
        a, b = cache.alloc_slot(), cache.alloc_slot()
        for slot in (a, b):
            cache.ensure(slot, 3 * cache.tokens_per_block)
        held = cache.frame_of(b, 0)
        cache.hold(held)  # b's next owner cannot keep it: opening b unmaps
        cache.free_slot(b)
        mapper.fences[-1].finished = True  # b's last work is done
        cache.free_slot(a)  # a's is not
        assert cache.alloc_slot() == b  # not a, though a is lower
        assert [count for _, count in mapper.unmaps] == [3]
        b_fence = mapper.fences[0]
        assert b_fence.waited == 1  # the unmap waited for b's last owner only
        cache.release(held)


def test_unmapping_a_freed_slot_waits_for_its_fence_only() -> None:
    cache, mapper = _cache()
    with cache:
        a = cache.alloc_slot()
        cache.ensure(a, 4 * cache.tokens_per_block)
        cache.free_slot(a)
        fence = mapper.fences[-1]
        assert cache.reclaim() == 4
        assert fence.waited == 1
        assert mapper.unmaps


def test_pages_taken_back_from_a_live_slot_wait_for_its_last_owners_work_only() -> None:
    """Blocks mapped ahead of a live owner's need were never used by its steps; a private
    frame kept from the slot's previous owner may be in that owner's last kernels."""
    cache, mapper = _cache(budget_blocks=6)
    with cache:
        a = cache.alloc_slot()
        cache.ensure(a, 4 * cache.tokens_per_block)
        cache.free_slot(a)
        old_owner = mapper.fences[-1]
        a = cache.alloc_slot()  # keeps the 4 private frames, owes 1 block
        cache.ensure(a, cache.tokens_per_block)
        cache.reserve_ahead(a, 5 * cache.tokens_per_block)
        assert cache.wait_ahead(timeout=30)
        b = cache.alloc_slot()
        cache.ensure(b, 3 * cache.tokens_per_block)  # needs frames a holds beyond its need
        assert mapper.unmaps
        assert old_owner.waited >= 1
        cache.free_slot(b)
        cache.free_slot(a)
