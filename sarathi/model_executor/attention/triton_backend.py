"""Attention with our Triton kernels over the vattention slot layout (GPU only).

The decodes of a step go to the split-K decode kernel in one launch (plus a merge launch
when the context is split); all prefill chunks of the step go to one prefill launch. Both
read the step's layout from device tensors (``AttentionMetadata``), so a step replays a
CUDA graph; inside one, ``meta.launch`` fixes the grids.
"""

from __future__ import annotations

import torch

from sarathi.model_executor.attention.metadata import AttentionMetadata, KVIndex, slot_index
from sarathi.model_executor.attention.triton_kernels import decode_attention, prefill_attention
from sarathi.model_executor.kernel_switches import num_sms


class TritonAttention:
    name = "triton"
    graphable = True

    def __init__(
        self, block_table: torch.Tensor | None = None, num_sms: int | None = None, pdl: bool = False
    ) -> None:
        """With ``block_table`` the caches are paged pools (the ``paged`` backend's
        kernels). ``num_sms`` (default: the device's) sizes the decode kernel's split;
        ``pdl``: the model's switch for programmatic dependent launch."""
        self.block_table = block_table
        self._num_sms = num_sms
        self.pdl = pdl

    def kv_index(self, meta: AttentionMetadata) -> KVIndex:
        return slot_index(meta)

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        """q: [T, Hq, D]; caches: [slots, max_len, Hkv, D] (any strides), or block pools
        with a block table -> [T, Hq, D]."""
        out = torch.empty_like(q)
        nd = meta.num_decodes
        fixed = meta.launch
        if nd:
            if self._num_sms is None:
                self._num_sms = num_sms(q.device)
            decode_attention(
                q[:nd],
                k_cache,
                v_cache,
                meta.decode_slots,
                meta.decode_context_lens,
                meta.max_decode_context,
                scale,
                window,
                out[:nd],
                self._num_sms,
                fixed.decode_split if fixed is not None else None,
                self.block_table,
                fixed.decode_count if fixed is not None else None,
                self.pdl,
                fixed.decode if fixed is not None else None,
            )
        c = meta.chunks
        if c is not None:
            tiles = None
            if c.tile_chunk is not None and c.tile_block is not None:
                tiles = (c.tile_chunk, c.tile_block)
            prefill_attention(
                q,
                k_cache,
                v_cache,
                c.slot,
                c.start,
                c.length,
                c.offset,
                c.longest,
                scale,
                window,
                out,
                self.block_table,
                tiles,
            )
        return out
