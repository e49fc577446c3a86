"""Attention with our Triton kernels over the vattention slot layout (GPU only).

The decodes of a step go to the split-K decode kernel in one launch (plus a merge launch
when the context is split); all prefill chunks of the step go to one prefill launch: on
Hopper the warp-specialized Gluon kernel (``gluon_prefill.py``) for 16-bit activations with
128-wide heads and no sliding window, else the Triton kernel. Both
read the step's layout from device tensors (``AttentionMetadata``), so a step replays a
CUDA graph; inside one, ``meta.launch`` fixes the grids.

In a mixed step the decode kernel overlaps the prefill kernel. With programmatic dependent
launch (Hopper and later) it launches right behind it: the prefill's programs fill every SM
from the start, and the decode programs take each SM its last programs leave (Llama-3-8B
mixed step on an H200: 26.51 / 26.61 ms against 26.69 / 26.72 on a second stream). Without
PDL it runs on a second stream beside it, which a graph captures as a second branch.
"""

from __future__ import annotations

import torch

from sarathi.model_executor.attention.launch import prefill_launch
from sarathi.model_executor.attention.metadata import (
    AttentionMetadata,
    ChunkTable,
    DecodeRope,
    KVIndex,
    slot_index,
)
from sarathi.model_executor.attention.triton_decode import decode_attention
from sarathi.model_executor.attention.triton_prefill import DescriptorScratch, prefill_attention
from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches, num_sms


class TritonAttention:
    name = "triton"
    graphable = True

    def __init__(
        self,
        block_table: torch.Tensor | None = None,
        num_sms: int | None = None,
        kernels: KernelSwitches = REFERENCE,
    ) -> None:
        """With ``block_table`` the caches are paged pools (the ``paged`` backend's
        kernels). ``num_sms`` (default: the device's) sizes the decode kernel's split;
        ``kernels``: the model's switches (``pdl``: programmatic dependent launch;
        ``overlap``: a mixed step's decode kernel overlapping its prefill kernel)."""
        self.block_table = block_table
        self._num_sms = num_sms
        self.kernels = kernels
        self._side: torch.cuda.Stream | None = None
        self._scratch = DescriptorScratch()

    def kv_index(self, meta: AttentionMetadata) -> KVIndex:
        return slot_index(meta)

    def _warp_prefill(self, head_dim: int, dtype: torch.dtype) -> bool:
        """Whether prefill chunks go to the warp-specialized Gluon kernel (layers without a
        sliding window): on Hopper, over vattention slots, for 16-bit activations at the
        head size it was built and measured for."""
        return (
            self.kernels.warp_prefill
            and self.block_table is None
            and head_dim == 128
            and dtype in (torch.bfloat16, torch.float16)
        )

    def prefill_block_m(self, head_dim: int, dtype: torch.dtype) -> int:
        return prefill_launch(head_dim, self._warp_prefill(head_dim, dtype)).block_m

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
        c = meta.chunks
        if not (nd and c is not None and self.kernels.overlap and q.is_cuda):
            if nd:
                self._decode(q, k_cache, v_cache, meta, scale, window, out, self.kernels.pdl)
            if c is not None:
                self._prefill(q, k_cache, v_cache, c, scale, window, out)
            return out
        if self.kernels.pdl:
            self._prefill(q, k_cache, v_cache, c, scale, window, out, release=True)
            self._decode(q, k_cache, v_cache, meta, scale, window, out, False, behind=True)
            return out
        # The side stream starts after everything queued so far (this layer's q and K/V
        # writes) and the main stream waits for it before the next layer reads ``out``.
        # Buffers the decode kernel allocates belong to the side stream's pool.
        main = torch.cuda.current_stream(q.device)
        if self._side is None:
            self._side = torch.cuda.Stream(q.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):
            # No programmatic launch across the fork: its predecessor is an event wait.
            self._decode(q, k_cache, v_cache, meta, scale, window, out, False)
        self._prefill(q, k_cache, v_cache, c, scale, window, out)
        main.wait_stream(self._side)
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
        """One decode and nothing else (batch-1 decode): the decode kernel rotates q and
        the new key and writes the new K/V itself, so the rotary kernel's launch goes."""
        if not (q.is_cuda and q.shape[0] == meta.num_decodes == 1 and meta.chunks is None):
            return None
        out = torch.empty(q.shape, dtype=rope.dtype, device=q.device)
        self._decode(q, k_cache, v_cache, meta, scale, window, out, self.kernels.pdl, rope)
        return out

    def _decode(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
        out: torch.Tensor,
        pdl: bool,
        rope: DecodeRope | None = None,
        behind: bool = False,
    ) -> None:
        nd = meta.num_decodes
        fixed = meta.launch
        if self._num_sms is None:
            self._num_sms = num_sms(q.device)
        decode_attention(
            q[:nd],
            k_cache,
            v_cache,
            meta.decode_slots,
            meta.decode_context_lens,
            scale,
            window,
            out[:nd],
            self._num_sms,
            fixed.decode_splits if fixed is not None else None,
            self.block_table,
            fixed.decode_count if fixed is not None else None,
            pdl,
            fixed.decode if fixed is not None else None,
            rope,
            behind,
        )

    def _prefill(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        c: ChunkTable,
        scale: float,
        window: int | None,
        out: torch.Tensor,
        release: bool = False,
    ) -> None:
        tiles = None
        if c.tile_chunk is not None and c.tile_block is not None:
            tiles = (c.tile_chunk, c.tile_block)
        d = q.shape[2]
        warp = self._warp_prefill(d, q.dtype)
        chunks = (q, k_cache, v_cache, c.slot, c.start, c.length, c.offset, c.longest, scale)
        if warp and window is None:
            # Imported here: only where ``kernels.warp_prefill`` found Gluon.
            from sarathi.model_executor.attention.gluon_prefill import gluon_prefill_attention

            gluon_prefill_attention(*chunks, out, tiles, release=release, scratch=self._scratch)
            return
        prefill_attention(
            *chunks,
            window,
            out,
            self.block_table,
            tiles,
            launch=prefill_launch(d, warp),
            release=release,
            scratch=self._scratch,
        )
