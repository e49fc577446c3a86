"""The cuda backend on a real GPU: tensors, device memory accounting, driver errors."""

from __future__ import annotations

import random

import pytest
import torch

from vattention import DriverError, KVCache

pytestmark = pytest.mark.gpu
MIB = 1 << 20


def _llama_cache(
    device: torch.device,
    *,
    num_layers: int,
    max_slots: int,
    max_len: int,
    memory_budget: int,
    layout: str = "per_layer",  # KVCache's default
) -> KVCache:
    """A cache of the Llama shape (8 KV heads of 128 dims, bf16) on the GPU."""
    return KVCache(
        num_layers=num_layers,
        num_kv_heads=8,
        head_dim=128,
        max_slots=max_slots,
        max_len=max_len,
        dtype=torch.bfloat16,
        device=device,
        layout=layout,
        memory_budget=memory_budget,
    )


def _free_bytes() -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0]


def test_auto_picks_cuda_and_views_are_cuda_tensors(cuda_device: torch.device) -> None:
    with _llama_cache(
        cuda_device, num_layers=4, max_slots=4, max_len=5000, memory_budget=64 * MIB, layout="mega"
    ) as cache:
        assert cache.backend_name == "cuda"
        assert cache.geometry.page_bytes % (2 * MIB) == 0
        slot = cache.alloc_slot()
        cache.ensure(slot, 3000)
        k, v = cache.layer(2)
        assert k.is_cuda and k.device == cuda_device and k.dtype == torch.bfloat16
        assert k.shape == (4, 5000, 8, 128)
        k[slot, :3000] = 1.5
        v[slot, :3000] = torch.arange(3000, device=cuda_device, dtype=torch.bfloat16)[:, None, None]
        assert float(k[slot, :3000].float().sum()) == 1.5 * 3000 * 8 * 128
        assert torch.equal(
            v[slot, :3000, 0, 0].float().cpu(), torch.arange(3000, dtype=torch.bfloat16).float()
        )


def test_alloc_free_cycles_leave_device_memory_where_it_was(cuda_device: torch.device) -> None:
    before = _free_bytes()
    cache = _llama_cache(
        cuda_device,
        num_layers=2,
        max_slots=8,
        max_len=4096,
        memory_budget=12 * 8 * MIB,
        layout="per_layer",
    )
    created = _free_bytes()
    assert before - created >= cache.num_blocks * cache.geometry.block_bytes  # the pool
    rng = random.Random(0)
    for cycle in range(10_000):
        slots = [cache.alloc_slot() for _ in range(3)]
        for slot in slots:
            cache.ensure(slot, rng.randint(1, 4 * cache.tokens_per_block))
            cache.reserve_ahead(slot, rng.randint(1, 4096))
        if cycle % 97 == 0:
            cache.wait_ahead()  # let the background thread map some hints before the frees
        rng.shuffle(slots)
        for slot in slots:
            cache.free_slot(slot)
        if cycle % 97 == 0:
            cache.reclaim()
    cache.wait_ahead()
    stats = cache.stats()
    assert stats["blocks_unmapped"] > 0 and stats["blocks_mapped_ahead"] > 0
    assert _free_bytes() == created
    cache.close()
    assert abs(_free_bytes() - before) <= 2 * MIB


def test_pool_larger_than_the_gpu_raises_driver_error(cuda_device: torch.device) -> None:
    total = torch.cuda.mem_get_info()[1]
    before = _free_bytes()
    with pytest.raises(DriverError) as info:
        _llama_cache(
            cuda_device, num_layers=1, max_slots=1024, max_len=1 << 20, memory_budget=2 * total
        )
    assert info.value.name == "CUDA_ERROR_OUT_OF_MEMORY"
    assert abs(_free_bytes() - before) <= 2 * MIB  # the partial pool was released


def test_many_reservations_close_cleanly(cuda_device: torch.device) -> None:
    before = _free_bytes()
    for _ in range(5):
        cache = _llama_cache(
            cuda_device,
            num_layers=32,
            max_slots=16,
            max_len=8192,
            memory_budget=2 * 64 * 2 * MIB,
            layout="per_layer",
        )
        slot = cache.alloc_slot()
        cache.ensure(slot, cache.tokens_per_block + 1)
        cache.layer(31)[1][slot, : cache.tokens_per_block + 1] = 3.0
        cache.close()
    assert abs(_free_bytes() - before) <= 2 * MIB


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_shared_frames_alias_on_the_device(cuda_device: torch.device, layout: str) -> None:
    with _llama_cache(
        cuda_device,
        num_layers=2,
        max_slots=4,
        max_len=4096,
        memory_budget=16 * 8 * MIB,
        layout=layout,
    ) as cache:
        assert cache.shares_frames
        t = cache.tokens_per_block
        first = cache.alloc_slot()
        a = cache.alloc_slot()
        cache.free_slot(first)  # the sharer lands on another slot
        cache.ensure(a, 3 * t)
        for i in range(2):
            k, v = cache.layer(i)
            k[a, : 3 * t] = torch.arange(3 * t, device=cuda_device)[:, None, None].to(k.dtype)
            v[a, : 3 * t] = -1.0
        prefix = [cache.frame_of(a, 0), cache.frame_of(a, 1)]
        for frame in prefix:
            cache.hold(frame)
        b = cache.alloc_slot(prefix)  # while a is alive
        cache.free_slot(a)
        c = cache.alloc_slot(prefix)  # a's old slot: its held frames stay, its block 2 goes
        cache.ensure(b, 3 * t)
        cache.ensure(c, 3 * t)
        for i in range(2):
            k, v = cache.layer(i)
            k[b, 2 * t : 3 * t] = 7.0
            k[c, 2 * t : 3 * t] = 9.0
            for s in (b, c):
                want = torch.arange(2 * t, device=cuda_device)[:, None, None].to(k.dtype)
                assert torch.equal(k[s, : 2 * t], want.expand(-1, 8, 128))
                assert bool((v[s, : 2 * t] == -1.0).all())
            assert bool((k[b, 2 * t : 3 * t] == 7.0).all())
            assert bool((k[c, 2 * t : 3 * t] == 9.0).all())
        stats = cache.stats()
        assert stats["blocks_used"] == 4 and stats["frames_shared"] == 2
        assert stats["mapped_bytes"] < stats["virtual_mapped_bytes"]


def test_a_new_owner_avoids_a_slot_whose_last_kernels_still_run(
    cuda_device: torch.device,
) -> None:
    """Unmapping a freed slot waits for its last owner's kernels only (not for everything
    queued), and a new owner prefers a slot whose last owner's work is done."""
    with _llama_cache(
        cuda_device, num_layers=2, max_slots=3, max_len=4096, memory_budget=256 * MIB, layout="mega"
    ) as cache:
        a, b = cache.alloc_slot(), cache.alloc_slot()
        for slot in (a, b):
            cache.ensure(slot, 2000)
        frame = cache.frame_of(b, 0)
        cache.hold(frame)  # the next owner of b cannot keep it: opening b unmaps it
        cache.free_slot(b)
        torch.cuda.synchronize()  # b's last work is done
        k, _ = cache.layer(0)
        torch.cuda._sleep(200_000_000)  # a kernel queued before a's owner leaves
        k[a, :2000] = 3.0
        cache.free_slot(a)
        c = cache.alloc_slot()
        assert c == b  # not a, the lowest free slot: its last kernels still run
        cache.ensure(c, 2000)
        k[c, :2000] = 1.0
        cache.release(frame)
        torch.cuda.synchronize()
        d = cache.alloc_slot()
        assert d == a
        cache.ensure(d, 2000)
        torch.cuda.synchronize()
        assert bool((k[d, :2000] == 3.0).all())  # a's private frames were kept
        assert bool((k[c, :2000] == 1.0).all())
