"""Small host caches for the frame tests (a module of its own: test modules import it)."""

from __future__ import annotations

import torch

from vattention import KVCache

LAYERS = 2


def small_cache(
    backend: str = "cpu",
    layout: str = "per_layer",
    budget_blocks: int | None = None,
    max_slots: int = 4,
) -> KVCache:
    """A two-layer float32 cache of ``max_slots`` slots; ``budget_blocks``: its memory
    budget in blocks (None: the backend's default)."""
    kwargs = dict(
        num_layers=LAYERS,
        num_kv_heads=2,
        head_dim=16,
        max_slots=max_slots,
        max_len=8 * 64,
        dtype=torch.float32,
        layout=layout,
        page_bytes=8192 if layout == "mega" else 4096,
        backend=backend,
    )
    probe = KVCache(**kwargs)  # type: ignore[arg-type]
    block = probe.geometry.block_bytes
    probe.close()
    budget = None if budget_blocks is None else budget_blocks * block
    return KVCache(**kwargs, memory_budget=budget)  # type: ignore[arg-type]
