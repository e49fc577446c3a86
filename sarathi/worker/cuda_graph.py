"""CUDA graphs for pure-decode steps.

A decode step of a small model is a few hundred short kernels; launched one by one from
Python the GPU idles between them. Here the model forward plus the LM head is captured once
per batch-size bucket over static input buffers and replayed: one launch per step. A batch
is padded up to its bucket with rows that decode one token of a private pad slot, so the
padding never writes into a real sequence's cache.

Graphs need attention that reads its lengths from device tensors (the Triton kernels of the
``triton`` and ``paged`` backends, with the context split fixed at capture time to cover
``max_len``; the paged block table is a static device tensor updated in place) and a single
rank (the LM head of tensor parallelism returns None off rank 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sarathi.model_executor.attention import AttentionMetadata
from sarathi.model_executor.layers.rotary import RotaryEmbedding
from sarathi.model_executor.models.llama import ForwardContext

BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
           448, 512)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor  # [B] static inputs, written before each replay
    positions: torch.Tensor
    slots: torch.Tensor
    lens: torch.Tensor
    out: torch.Tensor  # [B, vocab] float32 logits (or [B, hidden] states), written by replay


def graphs_supported(model: torch.nn.Module, attention: object, device: torch.device) -> bool:
    tp = getattr(model, "tp", None)
    return (device.type == "cuda" and getattr(attention, "graphable", False)
            and (tp is None or tp.world_size == 1))


class DecodeGraphs:
    """Captures lazily (first step of each bucket) and replays decode forwards."""

    def __init__(self, model: torch.nn.Module, cache: object, attention: object,
                 rotary: RotaryEmbedding, device: torch.device, max_batch: int,
                 logits_in_graph: bool = True) -> None:
        self.model, self.cache, self.attention, self.rotary = model, cache, attention, rotary
        self.logits_in_graph = logits_in_graph
        self.device = device
        self.buckets = [b for b in BUCKETS if b < max_batch] + [max_batch]
        self.max_batch = max_batch
        # The pad slot: padded rows write their K/V here and attend to it alone.
        self.pad_slot = cache.alloc_slot()
        cache.ensure(self.pad_slot, 1)
        self._graphs: dict[int, _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def bucket(self, n: int) -> int | None:
        for b in self.buckets:
            if b >= n:
                return b
        return None

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
            lens: torch.Tensor) -> torch.Tensor | None:
        """Logits [n, vocab] of a decode step of n sequences (device tensors of n rows,
        already on their way to the GPU); None: no bucket is large enough."""
        n = input_ids.numel()
        b = self.bucket(n)
        if b is None:
            return None
        g = self._graphs.get(b) or self._capture(b)
        g.ids[:n].copy_(input_ids, non_blocking=True)
        g.positions[:n].copy_(positions, non_blocking=True)
        g.slots[:n].copy_(slots, non_blocking=True)
        g.lens[:n].copy_(lens, non_blocking=True)
        if n < b:  # an earlier, larger step left real rows here
            g.ids[n:].zero_()
            g.positions[n:].zero_()
            g.slots[n:].fill_(self.pad_slot)
            g.lens[n:].fill_(1)
        g.graph.replay()
        if self.logits_in_graph:
            return g.out[:n]
        return self.model.compute_logits(g.out[:n])

    def _forward(self, ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden = self.model(ids, ctx)
        return self.model.compute_logits(hidden) if self.logits_in_graph else hidden

    def _capture(self, b: int) -> _Captured:
        from sarathi.model_executor.attention.triton_kernels import decode_splits

        dev = self.device
        ids = torch.zeros(b, dtype=torch.long, device=dev)
        positions = torch.zeros(b, dtype=torch.long, device=dev)
        slots = torch.full((b,), self.pad_slot, dtype=torch.long, device=dev)
        lens = torch.ones(b, dtype=torch.long, device=dev)
        max_len = self.cache.max_len
        meta = AttentionMetadata(slot_of_token=slots, positions=positions, num_decodes=b,
                                 decode_slots=slots, decode_context_lens=lens,
                                 max_decode_context=max_len, prefills=[])
        ctx = ForwardContext(meta, self.cache, self.attention, self.rotary)
        sms = torch.cuda.get_device_properties(dev).multi_processor_count
        kv_heads = self.cache.layer(0)[0].shape[2]
        previous = self.attention.fixed_split
        self.attention.fixed_split = decode_splits(b, kv_heads, max_len, 64, sms)
        try:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):  # warm-up: compile kernels, settle allocations
                for _ in range(2):
                    self._forward(ids, ctx)
            torch.cuda.current_stream(dev).wait_stream(side)
            # Per-step tensors the warm-up derived must be derived again inside the graph.
            meta.cache.clear()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                out = self._forward(ids, ctx)
        finally:
            self.attention.fixed_split = previous
        captured = _Captured(graph, ids, positions, slots, lens, out)
        self._graphs[b] = captured
        return captured
