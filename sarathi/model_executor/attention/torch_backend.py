"""Attention with PyTorch's scaled_dot_product_attention over the slot layout.

The reference backend: it runs anywhere PyTorch runs. Decodes are batched (each slot's
cache read up to the longest context, the rest masked); prefill chunks attend causally to
their slot's prefix plus themselves, one chunk at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarathi.model_executor.attention.launch import prefill_launch
from sarathi.model_executor.attention.metadata import (
    AttentionMetadata,
    DecodeRope,
    KVIndex,
    slot_index,
)


class TorchAttention:
    name = "torch"
    graphable = False  # reads chunk and context lengths on the host

    def kv_index(self, meta: AttentionMetadata) -> KVIndex:
        return slot_index(meta)

    def prefill_block_m(self, head_dim: int, dtype: torch.dtype) -> int:
        return prefill_launch(head_dim).block_m  # no tiles here; any unit serves

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        """q: [T, Hq, D]; caches: [slots, max_len, Hkv, D] -> [T, Hq, D]."""
        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            out[:nd] = self._decode(q[:nd], k_cache, v_cache, meta, scale, window)
        offset = nd
        for slot, start, n in meta.prefills:
            end = start + n
            qi = q[offset : offset + n].transpose(0, 1).unsqueeze(0)  # [1, Hq, n, D]
            ki = k_cache[slot, :end].transpose(0, 1).unsqueeze(0)  # [1, Hkv, end, D]
            vi = v_cache[slot, :end].transpose(0, 1).unsqueeze(0)
            if start == 0 and window is None:
                o = F.scaled_dot_product_attention(
                    qi, ki, vi, is_causal=True, scale=scale, enable_gqa=True
                )
            else:
                qpos = torch.arange(start, end, device=q.device).unsqueeze(1)
                kpos = torch.arange(end, device=q.device).unsqueeze(0)
                mask = kpos <= qpos
                if window is not None:
                    mask &= qpos - kpos < window
                o = F.scaled_dot_product_attention(
                    qi, ki, vi, attn_mask=mask, scale=scale, enable_gqa=True
                )
            out[offset : offset + n] = o.squeeze(0).transpose(0, 1)
            offset += n
        return out

    def decode_rope(
        self,
        q: torch.Tensor,
        rope: DecodeRope,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor | None:
        """Not fused here: the caller's rotary then ``forward``."""
        return None

    def _decode(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        # Nothing past a slot's context is read: that memory may be unmapped (vattention) or
        # hold another request's stale values.
        if q.shape[0] <= _LOOP_MAX:
            return self._decode_each(q, k_cache, v_cache, meta, scale, window)
        batch_idx, slot_idx, pos_idx = _decode_gather(meta)
        b, length = q.shape[0], meta.max_decode_context
        k = k_cache.new_zeros(b, length, *k_cache.shape[2:])
        v = v_cache.new_zeros(b, length, *v_cache.shape[2:])
        k[batch_idx, pos_idx] = k_cache[slot_idx, pos_idx]
        v[batch_idx, pos_idx] = v_cache[slot_idx, pos_idx]
        kpos = torch.arange(length, device=q.device).unsqueeze(0)
        lens = meta.decode_context_lens.unsqueeze(1)
        mask = kpos < lens
        if window is not None:
            mask &= (lens - 1) - kpos < window
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask[:, None, None, :],
            scale=scale,
            enable_gqa=True,
        )
        return o.squeeze(2)

    def _decode_each(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        """Few decodes: one SDPA per slot over views of its cache, nothing copied."""
        out = torch.empty_like(q)
        if "decode_lists" not in meta.cache:
            meta.cache["decode_lists"] = (
                meta.decode_slots.tolist(),
                meta.decode_context_lens.tolist(),
            )
        slots, lens = meta.cache["decode_lists"]
        for i, (slot, n) in enumerate(zip(slots, lens, strict=True)):
            lo = 0 if window is None else max(0, n - window)
            ki = k_cache[slot, lo:n].transpose(0, 1).unsqueeze(0)  # [1, Hkv, n, D]
            vi = v_cache[slot, lo:n].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(
                q[i].unsqueeze(0).unsqueeze(2), ki, vi, scale=scale, enable_gqa=True
            )
            out[i] = o[0, :, 0]
        return out


# Up to this many decodes, per-slot views beat gathering into a padded batch.
_LOOP_MAX = 8


def _decode_gather(meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch row, slot, position) of every cached token the decodes attend to; built once
    per step and shared by all layers."""
    if meta.cache.get("decode_gather") is None:
        lens = meta.decode_context_lens
        batch_idx = torch.repeat_interleave(torch.arange(len(lens), device=lens.device), lens)
        starts = torch.cumsum(lens, 0) - lens
        pos_idx = torch.arange(int(lens.sum()), device=lens.device) - starts[batch_idx]
        meta.cache["decode_gather"] = (batch_idx, meta.decode_slots[batch_idx], pos_idx)
    return meta.cache["decode_gather"]
