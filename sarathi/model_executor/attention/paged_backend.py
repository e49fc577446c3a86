"""Attention over the paged block-table cache (the baseline vAttention is measured against).

On a CUDA device with Triton it runs the same kernels as the ``triton`` backend with block
table address translation. Elsewhere it gathers each step's sequences out of the block
pool into a small dense cache and runs the SDPA reference on it: slow, but it is what the
CPU tests compare the paged engine against the dense one with.
"""

from __future__ import annotations

import torch

from sarathi.model_executor.attention.metadata import AttentionMetadata, DecodeRope, KVIndex
from sarathi.model_executor.attention.torch_backend import TorchAttention
from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches


class PagedAttention:
    name = "paged"

    def __init__(
        self,
        block_tables: torch.Tensor,
        block_tokens: int,
        use_triton: bool,
        kernels: KernelSwitches = REFERENCE,
    ) -> None:
        """``block_tables``: the paged cache's [slots, blocks per slot] table, a device
        tensor the cache updates in place (read at every call)."""
        self.block_tables = block_tables
        self.block_tokens = block_tokens
        self._triton = None
        self._torch = TorchAttention()
        if use_triton:
            from sarathi.model_executor.attention.triton_backend import TritonAttention

            self._triton = TritonAttention(block_tables, kernels=kernels)
        # CUDA graphs need the kernels; the gathering fallback reads lengths on the host.
        self.graphable = self._triton is not None

    def prefill_block_m(self, head_dim: int, dtype: torch.dtype) -> int:
        if self._triton is not None:
            return self._triton.prefill_block_m(head_dim, dtype)
        return self._torch.prefill_block_m(head_dim, dtype)

    def kv_index(self, meta: AttentionMetadata) -> KVIndex:
        """Token t's K/V row in the pool: [block, offset], computed once per step."""
        if "paged_index" not in meta.cache:
            pos = meta.positions
            blocks = self.block_tables[meta.slot_of_token, pos // self.block_tokens].long()
            meta.cache["paged_index"] = (blocks, pos % self.block_tokens)
        return meta.cache["paged_index"]

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        """q: [T, Hq, D]; caches: block pools [blocks, block_size, Hkv, D] -> [T, Hq, D]."""
        if self._triton is not None:
            return self._triton.forward(q, k_cache, v_cache, meta, scale, window)
        rows, dense_meta = _dense_step(meta, self.block_tables, self.block_tokens)
        k = k_cache[rows].flatten(1, 2)  # [sequences, blocks * block_size, Hkv, D]
        v = v_cache[rows].flatten(1, 2)
        return self._torch.forward(q, k, v, dense_meta, scale, window)

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
        """The Triton kernels' fused form where they run; None on the gathering path."""
        if self._triton is None:
            return None
        return self._triton.decode_rope(q, rope, k_cache, v_cache, meta, scale, window)


def _dense_step(
    meta: AttentionMetadata, block_tables: torch.Tensor, block_tokens: int
) -> tuple[torch.Tensor, AttentionMetadata]:
    """Block-table rows of the step's sequences, and the step's metadata renumbered so
    sequence i of the step is slot i of the gathered cache (built once per step)."""
    if "paged_dense" not in meta.cache:
        slots = meta.decode_slots.tolist() + [c.slot for c in meta.prefills]
        index = {s: i for i, s in enumerate(dict.fromkeys(slots))}
        longest = max(
            [0] + meta.decode_context_lens.tolist() + [c.start + c.length for c in meta.prefills]
        )
        used = torch.tensor(list(index), dtype=torch.long, device=block_tables.device)
        rows = block_tables[used, : -(-longest // block_tokens)].long()
        decode_slots = torch.tensor(
            [index[s] for s in meta.decode_slots.tolist()],
            dtype=torch.long,
            device=meta.decode_slots.device,
        )
        dense = AttentionMetadata(
            slot_of_token=meta.slot_of_token,
            positions=meta.positions,
            num_decodes=meta.num_decodes,
            decode_slots=decode_slots,
            decode_context_lens=meta.decode_context_lens,
            max_decode_context=meta.max_decode_context,
            prefills=[c._replace(slot=index[c.slot]) for c in meta.prefills],
        )
        meta.cache["paged_dense"] = (rows, dense)
    return meta.cache["paged_dense"]
