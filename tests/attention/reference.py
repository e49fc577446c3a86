"""A float32 attention reference over the slot layout, one query token at a time."""

from __future__ import annotations

import torch


def reference_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        slots: list[int], positions: list[int], scale: float,
                        window: int | None) -> torch.Tensor:
    """q: [T, Hq, D]; token t attends to keys [lo, positions[t]] of slot slots[t]."""
    hq, hkv = q.shape[1], k_cache.shape[2]
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for t, (slot, pos) in enumerate(zip(slots, positions)):
        lo = 0 if window is None else max(0, pos - window + 1)
        k = k_cache[slot, lo:pos + 1].float().repeat_interleave(hq // hkv, dim=1)  # [n, Hq, D]
        v = v_cache[slot, lo:pos + 1].float().repeat_interleave(hq // hkv, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[t].float(), k) * scale
        out[t] = torch.einsum("hn,nhd->hd", scores.softmax(-1), v)
    return out


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out.float() - ref).norm() / ref.norm()).item()
