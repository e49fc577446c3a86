"""Frame reference counts against a simple model, for the cpu backend and the paged cache.

Random sequences of alloc (sharing a prefix drawn from held frames or from a live slot),
ensure (then holding the slot's blocks, as the prefix cache does), hold, release, free,
map-ahead and reclaim. The model keeps which frames each
live slot owes and which are held; every fresh block gets a unique tag written through
the cache's views. Checked after every step: a fresh frame is never one in use, every
block a live slot owes reads back its frame's tag (so a shared frame shows the same bytes
under every slot and no fresh frame aliased a held one), the budget counts distinct
frames in use. At the end of each run everything is freed and released: every frame must
be free again and (cpu) the shared memory file empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sarathi.worker.paged_cache import PagedKVCache
from vattention import KVCache, OutOfPagesError, VAttentionError

LAYERS, HEADS, DIM, SLOTS, BLOCKS_PER_SLOT = 2, 1, 8, 4, 4


class Harness:
    """One cache under test and how to reach a block's memory through its views."""

    def __init__(self, kind: str, layout: str, budget_blocks: int) -> None:
        self.kind = kind
        if kind == "paged":
            self.cache: KVCache | PagedKVCache = PagedKVCache(
                LAYERS, HEADS, DIM, SLOTS, 4 * BLOCKS_PER_SLOT, torch.float32,
                torch.device("cpu"), 4, budget_blocks,
            )  # fmt: skip
        else:
            tokens = 4096 // (HEADS * DIM * 4) // (LAYERS if layout == "mega" else 1)
            probe = dict(
                num_layers=LAYERS,
                num_kv_heads=HEADS,
                head_dim=DIM,
                max_slots=SLOTS,
                max_len=tokens * BLOCKS_PER_SLOT,
                dtype=torch.float32,
                layout=layout,
                page_bytes=4096,
                backend="cpu",
            )
            block_bytes = 4096 * (2 * LAYERS if layout == "per_layer" else 2)
            self.cache = KVCache(**probe, memory_budget=budget_blocks * block_bytes)  # type: ignore[arg-type]
        assert self.cache.num_blocks == budget_blocks
        self.block_bytes = (
            self.cache.block_bytes
            if isinstance(self.cache, PagedKVCache)
            else self.cache.geometry.block_bytes
        )
        assert self.cache.max_len == self.cache.tokens_per_block * BLOCKS_PER_SLOT

    def regions(self, slot: int, block: int) -> list[torch.Tensor]:
        """Block ``block`` of ``slot``, K and V of every layer."""
        out = []
        for i in range(LAYERS):
            for t in self.cache.layer(i):
                if self.kind == "paged":
                    out.append(t[self.cache.frame_of(slot, block)])
                else:
                    n = self.cache.tokens_per_block
                    out.append(t[slot, block * n : (block + 1) * n])
        return out

    def free_frames(self) -> set[int]:
        if isinstance(self.cache, PagedKVCache):
            return set(self.cache._free_blocks)
        pager = self.cache._pager
        assert pager is not None
        with pager._cond:
            return set(pager._free)


class FrameMachine(RuleBasedStateMachine):
    kind = "cpu"
    layout = "per_layer"

    @initialize(budget=st.integers(min_value=1, max_value=SLOTS * BLOCKS_PER_SLOT))
    def create(self, budget: int) -> None:
        self.h = Harness(self.kind, self.layout, budget)
        self.cache = self.h.cache
        self.owed: dict[int, list[int]] = {}  # live slot -> frames, by block
        # In the order held: frame numbers depend on the map-ahead thread's timing, so
        # draws must not depend on them (hypothesis replays a run step by step).
        self.held: dict[int, None] = {}
        self.chains: list[list[int]] = []  # held prefixes, as the prefix cache keeps them
        self.tags: dict[int, float] = {}  # frame -> the tag written when it was fresh
        self.next_tag = 1.0

    # -- the model --------------------------------------------------------------------------
    def uses(self) -> dict[int, int]:
        count: dict[int, int] = {f: 1 for f in self.held}
        for frames in self.owed.values():
            for f in frames:
                count[f] = count.get(f, 0) + 1
        return count

    def write_tag(self, slot: int, block: int) -> None:
        frame = self.cache.frame_of(slot, block)
        self.tags[frame] = self.next_tag
        for sign, region in zip((1, -1) * LAYERS, self.h.regions(slot, block), strict=True):
            region.fill_(sign * self.next_tag)
        self.next_tag += 1.0

    # -- rules ------------------------------------------------------------------------------
    @precondition(lambda self: len(self.owed) < SLOTS)
    @rule(data=st.data())
    def alloc(self, data: st.DataObject) -> None:
        sources: list[Sequence[int]] = [*self.chains, *(f for f in self.owed.values() if f)]
        shared: list[int] = []
        if sources and data.draw(st.integers(0, 3)) > 0:  # mostly share
            source = data.draw(st.sampled_from(sources))
            shared = list(source[: data.draw(st.integers(1, len(source)))])
        free = set(range(SLOTS)) - set(self.owed)
        slot = self.cache.alloc_slot(shared)
        # The lowest free slot, unless a freed one still maps (part of) the shared prefix.
        assert slot in free if shared else slot == min(free)
        assert [self.cache.frame_of(slot, b) for b in range(len(shared))] == shared
        self.owed[slot] = shared

    @precondition(lambda self: self.owed)
    @rule(data=st.data(), blocks=st.integers(0, BLOCKS_PER_SLOT), cache_prefix=st.booleans())
    def ensure(self, data: st.DataObject, blocks: int, cache_prefix: bool) -> None:
        """``cache_prefix``: then hold the slot's blocks, as the prefix cache does after a
        prefill."""
        slot = data.draw(st.sampled_from(sorted(self.owed)))
        have = len(self.owed[slot])
        in_use = set(self.uses())
        grow = blocks - have
        if grow > self.cache.num_blocks - len(in_use):
            with pytest.raises(OutOfPagesError):
                self.cache.ensure(slot, blocks * self.cache.tokens_per_block)
            return
        self.cache.ensure(slot, blocks * self.cache.tokens_per_block)
        fresh = [self.cache.frame_of(slot, b) for b in range(have, max(have, blocks))]
        assert not set(fresh) & in_use, "a frame in use was handed out as fresh"
        assert len(set(fresh)) == len(fresh)
        self.owed[slot].extend(fresh)
        for b in range(have, max(have, blocks)):
            self.write_tag(slot, b)
        if cache_prefix and self.owed[slot]:
            for frame in self.owed[slot]:
                if frame not in self.held:
                    self.cache.hold(frame)
                    self.held[frame] = None
            self.chains.append(list(self.owed[slot]))

    @precondition(lambda self: any(self.owed.values()))
    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(sorted(s for s, f in self.owed.items() if f)))
        frames = self.owed[slot]
        chain = frames[: data.draw(st.integers(1, len(frames)))]
        for frame in chain:
            if frame in self.held:
                with pytest.raises(VAttentionError):
                    self.cache.hold(frame)
            else:
                self.cache.hold(frame)
                self.held[frame] = None
        self.chains.append(chain)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        frame = data.draw(st.sampled_from(list(self.held)))
        self.cache.release(frame)
        del self.held[frame]
        self.chains = [c for c in self.chains if frame not in c]
        with pytest.raises(VAttentionError):
            self.cache.release(frame)

    @precondition(lambda self: self.owed)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(sorted(self.owed)))
        self.cache.free_slot(slot)
        del self.owed[slot]

    @precondition(lambda self: self.owed)
    @rule(data=st.data(), blocks=st.integers(0, BLOCKS_PER_SLOT + 1))
    def ahead(self, data: st.DataObject, blocks: int) -> None:
        slot = data.draw(st.sampled_from(sorted(self.owed)))
        self.cache.reserve_ahead(slot, blocks * self.cache.tokens_per_block)

    @precondition(lambda self: isinstance(self.cache, KVCache))
    @rule()
    def reclaim(self) -> None:
        assert isinstance(self.cache, KVCache)
        self.cache.wait_ahead()
        self.cache.reclaim()
        assert self.cache.stats()["cached_blocks"] == 0

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def accounting(self) -> None:
        if not hasattr(self, "cache"):
            return
        uses = self.uses()
        stats = self.cache.stats()
        assert self.cache.num_free_blocks == self.cache.num_blocks - len(uses)
        assert stats["blocks_used"] == len(uses)
        assert stats["frames_held"] == len(self.held)
        assert stats["frames_shared"] == sum(1 for n in uses.values() if n > 1)
        owed = sum(map(len, self.owed.values()))
        assert stats["virtual_mapped_bytes"] == owed * self.h.block_bytes
        assert stats["mapped_bytes"] == len(uses) * self.h.block_bytes
        assert not set(uses) & self.h.free_frames(), "a frame in use is in the free list"

    @invariant()
    def contents(self) -> None:
        if not hasattr(self, "cache"):
            return
        for slot, frames in self.owed.items():
            for block, frame in enumerate(frames):
                tag = self.tags[frame]
                for sign, region in zip((1, -1) * LAYERS, self.h.regions(slot, block), strict=True):
                    assert bool((region == sign * tag).all()), (slot, block, frame)

    def teardown(self) -> None:
        if not hasattr(self, "cache"):
            return
        try:
            for slot in list(self.owed):
                self.cache.free_slot(slot)
            for frame in list(self.held):
                self.cache.release(frame)
            assert self.cache.num_free_blocks == self.cache.num_blocks
            if isinstance(self.cache, KVCache):
                self.cache.wait_ahead()
                self.cache.reclaim()
                stats = self.cache.stats()
                assert stats["resident_blocks"] == 0 and stats["in_transit_blocks"] == 0
                assert self.cache._pager is not None
                assert self.cache._pager._mapper.backing_bytes() == 0  # type: ignore[attr-defined]
            assert self.h.free_frames() == set(range(self.cache.num_blocks))
        finally:
            self.cache.close()


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@pytest.mark.parametrize(("kind", "layout", "examples"), [
    ("cpu", "per_layer", 50),
    ("cpu", "mega", 30),
    ("paged", "paged", 50),
])  # fmt: skip
def test_frame_refcounts_match_the_model(kind: str, layout: str, examples: int) -> None:
    machine = type(f"{kind}_{layout}", (FrameMachine,), {"kind": kind, "layout": layout})
    run_state_machine_as_test(machine, settings=_settings(examples))
