"""Frames shared between slots: aliasing, holds, deferred reclamation and the budget."""

from __future__ import annotations

import pytest
from small_caches import LAYERS, small_cache

from vattention import KVCache, OutOfPagesError, VAttentionError
from vattention.cpu import HostMapper


def _fill(cache: KVCache, slot: int, block: int, value: float) -> None:
    t = cache.tokens_per_block
    for i in range(LAYERS):
        k, v = cache.layer(i)
        k[slot, block * t : (block + 1) * t] = value
        v[slot, block * t : (block + 1) * t] = -value


def _holds(cache: KVCache, slot: int, block: int, value: float) -> bool:
    t = cache.tokens_per_block
    return all(
        bool((k[slot, block * t : (block + 1) * t] == value).all())
        and bool((v[slot, block * t : (block + 1) * t] == -value).all())
        for k, v in (cache.layer(i) for i in range(LAYERS))
    )


def _full(cache: KVCache, blocks: int) -> int:
    return blocks * cache.tokens_per_block


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_shared_frames_alias_and_private_blocks_stay_apart(layout: str) -> None:
    with small_cache(layout=layout) as cache:
        assert cache.shares_frames
        first = cache.alloc_slot()
        a = cache.alloc_slot()
        cache.free_slot(first)  # so that the next owner lands on another slot than a
        cache.ensure(a, _full(cache, 4))
        for b in range(4):
            _fill(cache, a, b, 10.0 + b)
        prefix = [cache.frame_of(a, b) for b in range(3)]
        for frame in prefix:
            cache.hold(frame)
        cache.free_slot(a)
        cache.reclaim()  # else the prefix would reopen slot a, which still maps it

        b_slot = cache.alloc_slot(prefix)
        assert b_slot != a
        assert [cache.frame_of(b_slot, b) for b in range(3)] == prefix
        assert all(_holds(cache, b_slot, b, 10.0 + b) for b in range(3))

        # A second live sharer: the same bytes under both, its own block 3 apart.
        c = cache.alloc_slot(prefix[:2])
        cache.ensure(b_slot, _full(cache, 4))
        cache.ensure(c, _full(cache, 4))
        _fill(cache, b_slot, 3, 77.0)
        _fill(cache, c, 2, 55.0)
        _fill(cache, c, 3, 66.0)
        assert cache.frame_of(c, 2) != prefix[2]
        assert _holds(cache, b_slot, 2, 12.0) and _holds(cache, b_slot, 3, 77.0)
        assert all(_holds(cache, c, b, 10.0 + b) for b in range(2))
        assert _holds(cache, c, 3, 66.0)

        stats = cache.stats()
        # 3 held prefix frames + b's block 3 + c's blocks 2, 3
        assert stats["blocks_used"] == 6 and stats["frames_held"] == 3
        assert stats["frames_shared"] == 3  # b+hold (3 frames), c too on 2 of them
        assert stats["mapped_bytes"] == 6 * cache.geometry.block_bytes
        assert stats["virtual_mapped_bytes"] == 8 * cache.geometry.block_bytes
        assert stats["shared_mapped_bytes"] == 3 * cache.geometry.block_bytes


def test_live_slots_share_without_a_hold_and_release_makes_a_frame_private() -> None:
    with small_cache(budget_blocks=6) as cache:
        a = cache.alloc_slot()
        cache.ensure(a, _full(cache, 2))
        _fill(cache, a, 0, 1.0)
        frame = cache.frame_of(a, 0)
        b = cache.alloc_slot([frame])  # a owes it: in use, shareable
        assert _holds(cache, b, 0, 1.0)
        assert cache.num_free_blocks == 4
        cache.hold(frame)
        with pytest.raises(VAttentionError):
            cache.hold(frame)  # at most one hold
        cache.free_slot(a)
        cache.free_slot(b)
        assert cache.num_free_blocks == 5  # the held frame
        c = cache.alloc_slot([frame])
        cache.release(frame)  # c still owes it: it stays, c's own now
        with pytest.raises(VAttentionError):
            cache.release(frame)
        assert cache.num_free_blocks == 5 and cache.stats()["frames_held"] == 0
        assert _holds(cache, c, 0, 1.0)
        cache.free_slot(c)
        assert cache.num_free_blocks == 6
        with pytest.raises(VAttentionError):
            cache.alloc_slot([frame])  # nobody uses it any more


def test_misuse_is_refused() -> None:
    with small_cache() as cache:
        a = cache.alloc_slot()
        cache.ensure(a, _full(cache, 2))
        f0, f1 = cache.frame_of(a, 0), cache.frame_of(a, 1)
        with pytest.raises(VAttentionError):
            cache.frame_of(a, 2)  # not owed
        with pytest.raises(VAttentionError):
            cache.alloc_slot([f0, f0])
        with pytest.raises(VAttentionError):
            cache.alloc_slot([cache.num_blocks])
        unused = next(f for f in range(cache.num_blocks) if f not in (f0, f1))
        with pytest.raises(VAttentionError):
            cache.hold(unused)
        with pytest.raises(VAttentionError):
            cache.release(f0)
        assert cache.num_free_blocks == cache.num_blocks - 2
        assert cache.stats()["slots_used"] == 1


def test_dense_cannot_share() -> None:
    with small_cache(backend="dense") as cache:
        assert not cache.shares_frames
        a = cache.alloc_slot()
        cache.ensure(a, _full(cache, 1))
        frame = cache.frame_of(a, 0)
        with pytest.raises(VAttentionError, match="cannot share"):
            cache.alloc_slot([frame])
        with pytest.raises(VAttentionError, match="cannot share"):
            cache.hold(frame)
        assert cache.alloc_slot() == 1  # the refused calls took nothing


def test_a_re_admitted_prefix_costs_no_driver_call() -> None:
    with small_cache() as cache:
        a = cache.alloc_slot()
        cache.ensure(a, _full(cache, 3))
        _fill(cache, a, 0, 3.0)
        _fill(cache, a, 1, 4.0)
        prefix = [cache.frame_of(a, 0), cache.frame_of(a, 1)]
        for frame in prefix:
            cache.hold(frame)
        cache.free_slot(a)
        before = cache.stats()
        assert cache.alloc_slot(prefix) == a
        cache.ensure(a, _full(cache, 3))  # block 2: the old private frame, kept
        stats = cache.stats()
        assert stats["blocks_unmapped"] == before["blocks_unmapped"]
        assert stats["blocks_mapped_shared"] == before["blocks_mapped_shared"]
        assert stats["blocks_mapped_sync"] == before["blocks_mapped_sync"]
        assert _holds(cache, a, 0, 3.0) and _holds(cache, a, 1, 4.0)


def test_a_prefix_opens_the_free_slot_that_still_maps_it() -> None:
    with small_cache() as cache:
        a, b = cache.alloc_slot(), cache.alloc_slot()
        cache.ensure(a, _full(cache, 1))
        cache.ensure(b, _full(cache, 2))
        prefix = [cache.frame_of(b, 0), cache.frame_of(b, 1)]
        for frame in prefix:
            cache.hold(frame)
        cache.free_slot(a)
        cache.free_slot(b)
        before = cache.stats()
        assert cache.alloc_slot(prefix) == b  # not a, the lowest free slot
        assert cache.stats()["blocks_mapped_shared"] == before["blocks_mapped_shared"]
        assert cache.alloc_slot() == a


@pytest.mark.parametrize("shared_blocks", [0, 1, "other"])
def test_a_reused_slot_never_writes_into_held_or_shared_frames(shared_blocks: int | str) -> None:
    """Deferred reclamation leaves the old owner's frames under the slot; the new owner
    must not get those that are held or mapped under a live slot."""
    with small_cache() as cache:
        a = cache.alloc_slot()
        other = cache.alloc_slot()
        cache.ensure(a, _full(cache, 4))
        cache.ensure(other, _full(cache, 1))
        _fill(cache, other, 0, 99.0)
        for b in range(4):
            _fill(cache, a, b, 20.0 + b)
        held = [cache.frame_of(a, 0), cache.frame_of(a, 1)]
        for frame in held:
            cache.hold(frame)
        # a live slot maps a's block 3 too (its frame is in use through a)
        sharer = cache.alloc_slot([held[0], held[1], cache.frame_of(a, 2), cache.frame_of(a, 3)])
        cache.free_slot(a)
        if shared_blocks == "other":
            # the new owner shares somebody else's frame at block 0: a mismatch at once
            shared = [cache.frame_of(other, 0)]
        else:
            shared = held[: int(shared_blocks)]
        assert cache.alloc_slot(shared) == a
        cache.ensure(a, _full(cache, 4))
        mine = [cache.frame_of(a, b) for b in range(len(shared), 4)]
        assert not set(mine) & {*held, *(cache.frame_of(sharer, b) for b in range(4))}
        for b in range(len(shared), 4):
            _fill(cache, a, b, -5.0)
        assert all(_holds(cache, sharer, b, 20.0 + b) for b in range(4))
        assert _holds(cache, other, 0, 99.0)
        cache.free_slot(sharer)
        probe = cache.alloc_slot(held)
        assert _holds(cache, probe, 0, 20.0) and _holds(cache, probe, 1, 21.0)


def test_budget_counts_distinct_frames_and_reclaim_skips_held_ones() -> None:
    with small_cache(budget_blocks=4) as cache:
        first = cache.alloc_slot()
        a = cache.alloc_slot()
        cache.free_slot(first)
        cache.ensure(a, _full(cache, 3))
        for b in range(3):
            _fill(cache, a, b, 30.0 + b)
        held = [cache.frame_of(a, 0), cache.frame_of(a, 1)]
        for frame in held:
            cache.hold(frame)
        cache.free_slot(a)  # a's three frames stay mapped under it, two of them held
        assert cache.num_free_blocks == 2
        b = cache.alloc_slot()
        assert b != a
        cache.ensure(b, _full(cache, 2))  # one free frame plus a's private one
        with pytest.raises(OutOfPagesError):
            cache.ensure(b, _full(cache, 3))
        # Two sharers of the held prefix cost nothing more.
        c = cache.alloc_slot(held)
        assert cache.num_free_blocks == 0
        cache.free_slot(c)
        cache.release(held[1])  # now private to a's dead slot
        cache.ensure(b, _full(cache, 3))  # reclaims it past the held frame in front of it
        assert cache.stats()["blocks_used"] == 4
        probe = cache.alloc_slot([held[0]])
        assert _holds(cache, probe, 0, 30.0)
        cache.free_slot(probe)
        cache.free_slot(b)
        cache.release(held[0])
        assert cache.num_free_blocks == 4
        cache.reclaim()
        stats = cache.stats()
        assert stats["resident_blocks"] == 0 and stats["in_transit_blocks"] == 0


def test_frames_shared_only_by_dead_slots_are_reclaimed() -> None:
    with small_cache(budget_blocks=3) as cache:
        grower = cache.alloc_slot()
        a = cache.alloc_slot()
        cache.ensure(a, _full(cache, 1))
        frame = cache.frame_of(a, 0)
        b = cache.alloc_slot([frame])
        cache.free_slot(a)
        cache.free_slot(b)  # the frame is resident under two dead slots, unused
        # Unmapping one copy frees nothing; the pager must keep going to the other.
        cache.ensure(grower, _full(cache, 3))
        stats = cache.stats()
        assert stats["blocks_used"] == 3 and stats["cached_blocks"] == 0
        assert stats["blocks_unmapped"] == 2


def test_freed_frames_give_their_memory_back() -> None:
    with small_cache() as cache:
        assert cache._pager is not None
        mapper = cache._pager._mapper
        assert isinstance(mapper, HostMapper)
        a = cache.alloc_slot()
        cache.ensure(a, _full(cache, 4))
        for b in range(4):
            _fill(cache, a, b, 1.0)
        block = cache.geometry.block_bytes
        assert mapper.backing_bytes() == 0  # private frames live in the reservation
        frame = cache.frame_of(a, 0)
        cache.hold(frame)
        cache.free_slot(a)
        assert cache.reclaim() == 3  # frames freed: the held one stays
        assert mapper.backing_bytes() == block  # the held frame keeps its content
        b = cache.alloc_slot([frame])
        assert _holds(cache, b, 0, 1.0)
        cache.free_slot(b)
        cache.reclaim()
        cache.release(frame)
        assert mapper.backing_bytes() == 0
