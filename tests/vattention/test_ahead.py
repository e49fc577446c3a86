"""The map-ahead worker: it takes mapping off ``ensure`` and never races the caller."""

from __future__ import annotations

import random

import pytest
import torch

from vattention import KVCache


def _cache(
    backend: str,
    device: torch.device,
    layout: str,
    budget_units: int | None,
    heads: int,
    dim: int,
    max_len: int,
    slots: int,
) -> KVCache:
    cache = KVCache(
        num_layers=2,
        num_kv_heads=heads,
        head_dim=dim,
        max_slots=slots,
        max_len=max_len,
        dtype=torch.float16,
        device=device,
        layout=layout,
        backend=backend,
    )
    if budget_units is None:
        return cache
    block = cache.geometry.block_bytes
    cache.close()
    return KVCache(
        num_layers=2,
        num_kv_heads=heads,
        head_dim=dim,
        max_slots=slots,
        max_len=max_len,
        dtype=torch.float16,
        device=device,
        layout=layout,
        memory_budget=budget_units * block,
        backend=backend,
    )


def test_hinted_growth_is_mapped_off_the_critical_path() -> None:
    cache = _cache("cpu", torch.device("cpu"), "mega", None, 2, 64, 2048, 4)
    try:
        slot = cache.alloc_slot()
        cache.reserve_ahead(slot, 2000)
        assert cache.wait_ahead(timeout=30)
        cache.ensure(slot, 2000)
        stats = cache.stats()
        assert stats["blocks_mapped_sync"] == 0
        assert stats["blocks_mapped_ahead"] == cache.geometry.blocks_for(2000)
        assert stats["ahead_blocks"] == 0
    finally:
        cache.close()


def _decode_loop(
    backend: str,
    device: torch.device,
    layout: str,
    heads: int,
    dim: int,
    max_len: int,
    budget_units: int,
    steps: int,
) -> None:
    """Requests arrive, decode one token per step with map-ahead hints, and finish;
    the contents must match a dense cache driven the same way."""
    slots = 8
    cache = _cache(backend, device, layout, budget_units, heads, dim, max_len, slots)
    ref = KVCache(
        num_layers=2,
        num_kv_heads=heads,
        head_dim=dim,
        max_slots=slots,
        max_len=max_len,
        dtype=torch.float16,
        device=device,
        layout=layout,
        page_bytes=cache.geometry.page_bytes,
        memory_budget=cache.num_blocks * cache.geometry.block_bytes,
        backend="dense",
    )
    rng = random.Random(0)
    lengths: dict[int, int] = {}
    targets: dict[int, int] = {}
    lookahead = 3 * cache.tokens_per_block // 2
    try:
        for step in range(steps):
            # Admit while the (promised) budget allows, like the scheduler does.
            while len(lengths) < slots and rng.random() < 0.3:
                target = rng.randint(1, max_len)
                promised = sum(cache.geometry.blocks_for(t) for t in targets.values())
                if promised + cache.geometry.blocks_for(target) > cache.num_blocks:
                    break
                slot = cache.alloc_slot()
                assert slot == ref.alloc_slot()
                lengths[slot], targets[slot] = 0, target
            for slot in list(lengths):
                n = lengths[slot] + 1
                cache.ensure(slot, n)
                ref.ensure(slot, n)
                value = float((slot * 31 + n) % 97)
                for i in range(2):
                    for t in (*cache.layer(i), *ref.layer(i)):
                        t[slot, n - 1] = value
                lengths[slot] = n
                cache.reserve_ahead(slot, n + lookahead)
                if n == targets[slot]:
                    for i in range(2):
                        for got, want in zip(cache.layer(i), ref.layer(i)):
                            assert torch.equal(got[slot, :n], want[slot, :n]), (step, slot)
                    cache.free_slot(slot)
                    ref.free_slot(slot)
                    del lengths[slot], targets[slot]
        stats = cache.stats()
        assert stats["blocks_mapped_ahead"] > 0
        assert stats["blocks_unmapped"] > 0  # the budget was tight enough to recycle pages
        assert stats["resident_blocks"] + stats["in_transit_blocks"] <= stats["blocks_total"]
    finally:
        cache.close()
        ref.close()


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_cpu_decode_loop_with_map_ahead(layout: str) -> None:
    _decode_loop(
        "cpu",
        torch.device("cpu"),
        layout,
        heads=2,
        dim=64,
        max_len=600,
        budget_units=40 if layout == "mega" else 12,
        steps=1500,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_cuda_decode_loop_with_map_ahead(layout: str, cuda_device: torch.device) -> None:
    _decode_loop(
        "cuda",
        cuda_device,
        layout,
        heads=8,
        dim=128,
        max_len=6000,
        budget_units=60 if layout == "mega" else 24,
        steps=4000,
    )
