"""Real memory behaviour of the cpu backend: residency follows tokens, not the reservation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vattention import KVCache

GIB = 1 << 30
MIB = 1 << 20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _rss() -> int:
    return _status_kib("VmRSS") * 1024


def _vm_size() -> int:
    return _status_kib("VmSize") * 1024


def _ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists()
    or Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "2",
    reason="needs Linux /proc and an overcommitting kernel (MAP_NORESERVE is ignored in mode 2)",
)


def test_rss_follows_tokens_not_reservation() -> None:
    # 4 reservations (2 layers, K and V) of S slots x 512K tokens x 2 KiB = S x 4 GiB virtual,
    # with S chosen so the reservation is at least 128 GiB and 4x this machine's RAM.
    max_len, tokens = 512 * 1024, 16 * 1024
    slots = max(32, -(-4 * _ram() // (4 * GIB)))
    page = 64 * 1024
    vm_before = _vm_size()
    cache = KVCache(
        num_layers=2,
        num_kv_heads=8,
        head_dim=128,
        max_slots=slots,
        max_len=max_len,
        dtype=torch.float16,
        device="cpu",
        layout="per_layer",
        page_bytes=page,
        backend="cpu",
    )
    try:
        reserved = _vm_size() - vm_before
        assert reserved >= 100 * GIB
        assert reserved >= 4 * _ram()
        rss_empty = _rss()

        written = 0
        used = [cache.alloc_slot() for _ in range(4)]
        for slot in used:
            cache.ensure(slot, tokens)
            for i in range(cache.num_layers):
                k, v = cache.layer(i)
                k[slot, :tokens] = 1.0
                v[slot, :tokens] = 2.0
            written += tokens * cache.geometry.token_bytes
        grown = _rss() - rss_empty
        assert written == 512 * MIB
        assert 0.9 * written <= grown <= 1.1 * written + 16 * MIB

        for slot in used:
            cache.free_slot(slot)
        # Deferred reclamation: freed pages stay resident for the slot's next owner.
        assert _rss() - rss_empty >= 0.9 * written
        assert cache.stats()["cached_blocks"] == 4 * cache.geometry.blocks_for(tokens)

        assert cache.reclaim() == 4 * cache.geometry.blocks_for(tokens)
        assert _rss() - rss_empty <= 0.1 * written + 16 * MIB
        assert cache.stats()["resident_blocks"] == 0
    finally:
        cache.close()


def test_reused_slot_keeps_its_pages() -> None:
    cache = KVCache(
        num_layers=2,
        num_kv_heads=4,
        head_dim=64,
        max_slots=4,
        max_len=4096,
        dtype=torch.float16,
        layout="mega",
        memory_budget=None,
        backend="cpu",
    )
    try:
        slot = cache.alloc_slot()
        cache.ensure(slot, 1000)
        blocks = cache.stats()["blocks_used"]
        cache.free_slot(slot)
        assert cache.alloc_slot() == slot
        cache.ensure(slot, 1000)
        stats = cache.stats()
        assert stats["blocks_mapped_sync"] == blocks  # the second ensure mapped nothing
        assert stats["blocks_unmapped"] == 0
    finally:
        cache.close()


def test_out_of_budget_takes_cached_pages_from_free_slots() -> None:
    cache = KVCache(
        num_layers=1,
        num_kv_heads=1,
        head_dim=512,
        max_slots=3,
        max_len=64,
        dtype=torch.float32,
        page_bytes=4096,
        memory_budget=2 * 2 * 4096,
        backend="cpu",
    )
    try:
        tokens = cache.tokens_per_block
        a, b = cache.alloc_slot(), cache.alloc_slot()
        cache.ensure(a, tokens)
        cache.ensure(b, tokens)
        cache.free_slot(a)
        c = cache.alloc_slot()
        assert c == a  # the lowest free slot, with its pages still there
        cache.free_slot(b)
        cache.ensure(c, 2 * tokens)  # needs b's cached block
        stats = cache.stats()
        assert stats["blocks_unmapped"] == 1
        assert stats["resident_blocks"] == 2 == stats["blocks_total"]
    finally:
        cache.close()
