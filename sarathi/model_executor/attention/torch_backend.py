"""Attention with PyTorch's scaled_dot_product_attention over the slot layout.

The reference backend: it runs anywhere PyTorch runs. Decodes are batched (each slot's
cache read up to the longest context, the rest masked); prefill chunks attend causally to
their slot's prefix plus themselves, one chunk at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarathi.model_executor.attention.metadata import AttentionMetadata


class TorchAttention:
    name = "torch"

    def forward(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, window: int | None) -> torch.Tensor:
        """q: [T, Hq, D]; caches: [slots, max_len, Hkv, D] -> [T, Hq, D]."""
        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            out[:nd] = self._decode(q[:nd], k_cache, v_cache, meta, scale, window)
        offset = nd
        for slot, start, n in meta.prefills:
            end = start + n
            qi = q[offset:offset + n].transpose(0, 1).unsqueeze(0)  # [1, Hq, n, D]
            ki = k_cache[slot, :end].transpose(0, 1).unsqueeze(0)  # [1, Hkv, end, D]
            vi = v_cache[slot, :end].transpose(0, 1).unsqueeze(0)
            if start == 0 and window is None:
                o = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=scale,
                                                   enable_gqa=True)
            else:
                qpos = torch.arange(start, end, device=q.device).unsqueeze(1)
                kpos = torch.arange(end, device=q.device).unsqueeze(0)
                mask = kpos <= qpos
                if window is not None:
                    mask &= qpos - kpos < window
                o = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, scale=scale,
                                                   enable_gqa=True)
            out[offset:offset + n] = o.squeeze(0).transpose(0, 1)
            offset += n
        return out

    def _decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, window: int | None) -> torch.Tensor:
        # One SDPA per sequence over views of its own slot: nothing is copied, and nothing
        # past a slot's context is read (that memory may be unmapped or hold stale values).
        out = torch.empty_like(q)
        slots, lens = _decode_lists(meta)
        for i, (slot, n) in enumerate(zip(slots, lens)):
            lo = 0 if window is None else max(0, n - window)
            ki = k_cache[slot, lo:n].transpose(0, 1).unsqueeze(0)  # [1, Hkv, n, D]
            vi = v_cache[slot, lo:n].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(q[i].unsqueeze(0).unsqueeze(2), ki, vi,
                                               scale=scale, enable_gqa=True)
            out[i] = o[0, :, 0]
        return out


def _decode_lists(meta: AttentionMetadata) -> tuple[list[int], list[int]]:
    """Slots and context lengths as Python ints, converted once per step for all layers."""
    if "decode_lists" not in meta.cache:
        meta.cache["decode_lists"] = (meta.decode_slots.tolist(),
                                      meta.decode_context_lens.tolist())
    return meta.cache["decode_lists"]
