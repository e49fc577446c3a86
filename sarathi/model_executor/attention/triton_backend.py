"""Attention with our Triton kernels over the vattention slot layout (GPU only).

The decodes of a step go to the split-K decode kernel in one launch (plus a merge launch
when the context is split); all prefill chunks of the step go to one prefill launch. Per-step
tensors (the chunk table) are built once and shared by every layer through ``meta.cache``.
"""

from __future__ import annotations

import torch

from sarathi.model_executor.attention.metadata import AttentionMetadata, slot_index
from sarathi.model_executor.attention.triton_kernels import decode_attention, prefill_attention


class TritonAttention:
    name = "triton"
    kv_index = staticmethod(slot_index)
    graphable = True  # reads lengths from device tensors only

    def __init__(self, block_table: torch.Tensor | None = None) -> None:
        # With a block table the caches are paged pools (the ``paged`` backend's kernels).
        self.block_table = block_table
        self._num_sms: int | None = None
        # (splits, split_size) while a decode graph is captured/replayed: the split plan
        # must not depend on the step's (host-side) longest context then.
        self.fixed_split: tuple[int, int] | None = None

    def forward(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, window: int | None) -> torch.Tensor:
        """q: [T, Hq, D]; caches: [slots, max_len, Hkv, D] (any strides), or block pools
        with a block table -> [T, Hq, D]."""
        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            if self._num_sms is None:
                self._num_sms = torch.cuda.get_device_properties(q.device).multi_processor_count
            decode_attention(q[:nd], k_cache, v_cache, meta.decode_slots,
                             meta.decode_context_lens, meta.max_decode_context, scale, window,
                             out[:nd], self._num_sms, self.fixed_split, self.block_table)
        if meta.prefills:
            slot, start, length, off, longest = _chunk_table(meta, q.device)
            prefill_attention(q, k_cache, v_cache, slot, start, length, off, longest, scale,
                              window, out, self.block_table)
        return out


def _chunk_table(meta: AttentionMetadata, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Slot, start, length and flat-batch offset of each prefill chunk, as device tensors."""
    if "triton_chunks" not in meta.cache:
        rows, off = [], meta.num_decodes
        for slot, start, n in meta.prefills:
            rows.append((slot, start, n, off))
            off += n
        table = torch.tensor(rows, dtype=torch.int64).t().contiguous()
        table = table.pin_memory().to(device, non_blocking=True) if device.type == "cuda" \
            else table
        meta.cache["triton_chunks"] = (table[0], table[1], table[2], table[3],
                                       max(n for _, _, n in meta.prefills))
    return meta.cache["triton_chunks"]
