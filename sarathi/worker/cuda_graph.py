"""CUDA graphs for every step: decode steps and mixed steps (prefill chunks + decodes).

A step of a small model is a few hundred short kernels; launched one by one from Python
the GPU idles between them, and an eager step costs milliseconds of launches whatever its
size. Here every forward shape the scheduler can produce is captured once, at startup,
over views of the step buffer (``step_inputs.py``), and a step replays one graph:

- decode graphs, one per batch-size bucket: every row is a decode; rows past the batch
  decode one token of a private pad slot, so padding never writes a real sequence's cache;
  the LM head runs inside (logits out);
- mixed graphs, one per token-count bucket up to the token budget: any mix of decodes and
  prefill chunks. The decode kernel's grid covers as many decodes as the bucket could hold
  and reads the real count from the device; the prefill kernel runs over a tile table
  (chunk, query block) built on the host. The graph gathers the sampled rows' hidden
  states; the LM head runs after the replay, on just those rows.

Both need attention that reads its lengths from device tensors (the Triton kernels of the
``triton`` and ``paged`` backends). Under tensor parallelism every rank captures the same
graphs and replays the same one each step (the choice follows the step's shape, which all
ranks share): the layers' NCCL all-reduces are captured inside, while the LM head's gather
to the sampling rank runs after the replay (a decode graph then ends at the hidden states,
as a mixed graph does).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from sarathi.model_executor.attention import AttentionBackend, AttentionMetadata
from sarathi.model_executor.attention.launch import DecodeLaunch, decode_launch, decode_splits
from sarathi.model_executor.attention.metadata import ChunkTable, FixedLaunch
from sarathi.model_executor.layers.rotary import RotaryEmbedding
from sarathi.model_executor.models.llama import ForwardContext, LayerCaches, LlamaForCausalLM
from sarathi.worker.step_inputs import StepBuffers

logger = logging.getLogger("sarathi")

DECODE_BUCKETS = (
    1,
    2,
    4,
    8,
    16,
    24,
    32,
    48,
    64,
    80,
    96,
    112,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
)


def token_buckets(max_tokens: int) -> list[int]:
    """Token counts of the mixed graphs: fine steps where padding would cost most."""
    sizes = [8, 16, 32, 48, 64]
    step = 32
    while sizes[-1] < max_tokens:
        nxt = sizes[-1] + step
        sizes.append(nxt)
        if nxt >= 256 * (step // 32):
            step *= 2
    return [b for b in sizes if b < max_tokens] + [max_tokens]


def graphs_supported(
    model: LlamaForCausalLM, attention: AttentionBackend, device: torch.device
) -> bool:
    return device.type == "cuda" and attention.graphable


def resolve_pending(ids: torch.Tensor, last_token: torch.Tensor) -> torch.Tensor:
    """Token ids where a negative id ``-(s + 1)`` stands for the token last sampled at slot
    ``s`` (a placeholder: sampled by the step before, not yet on the host)."""
    src = (-1 - ids).clamp_(min=0)
    return torch.where(ids >= 0, ids, last_token[src])


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    # Decode graphs: logits, or every row's hidden states where the LM head runs after the
    # replay; mixed graphs: the sampled rows' hidden states.
    out: torch.Tensor


@dataclass(frozen=True)
class MixedShape:
    """What a mixed graph of ``tokens`` tokens can take."""

    tokens: int
    decodes: int
    chunks: int
    tiles: int
    samples: int


class StepGraphs:
    def __init__(
        self,
        model: LlamaForCausalLM,
        cache: LayerCaches,
        attention: AttentionBackend,
        rotary: RotaryEmbedding,
        buffers: StepBuffers,
        last_token: torch.Tensor,
        max_len: int,
        max_decodes: int,
        max_tokens: int,
        block_m: int,
        device: torch.device,
        num_sms: int,
    ) -> None:
        self.model, self.cache, self.attention, self.rotary = model, cache, attention, rotary
        self.buffers = buffers
        self.last_token = last_token
        self.device = device
        self.max_len = max_len
        cap = buffers.capacity
        self.decode_buckets = [b for b in DECODE_BUCKETS if b < max_decodes] + [max_decodes]
        self.token_buckets = token_buckets(max_tokens)
        self.mixed_shapes = {
            t: MixedShape(
                t,
                min(t, cap.decodes),
                cap.chunks,
                math.ceil(t / block_m) + cap.chunks,
                min(t, cap.samples),
            )
            for t in self.token_buckets
        }
        self.sms = num_sms
        self.kv_heads = cache.layer(0)[0].shape[2]
        self.group = model.shape.num_heads // model.shape.num_kv_heads  # query heads per KV head
        self._decode: dict[int, _Graph] = {}
        self._mixed: dict[int, _Graph] = {}
        self.lm_head_in_graph = self._lm_head_in_graph()
        self.replays = {"decode": 0, "mixed": 0}  # steps served by a graph, by kind
        self.capture_seconds = 0.0

    def _lm_head_in_graph(self) -> bool:
        """Whether decode graphs end at the logits: on a single rank. Under tensor
        parallelism the LM head gathers its vocabulary slices to the sampling rank, a
        collective kept out of the graphs."""
        return self.model.tp.world_size == 1

    # -- startup -----------------------------------------------------------------------------
    def capture_all(self) -> float:
        """Capture every bucket (largest first, so the shared memory pool is sized once);
        returns the seconds it took."""
        t0 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        jobs = [("decode", b) for b in reversed(self.decode_buckets)] + [
            ("mixed", t) for t in reversed(self.token_buckets)
        ]
        with torch.inference_mode():
            for kind, size in tqdm(jobs, desc="capturing CUDA graphs", unit="graph", leave=False):
                if kind == "decode":
                    self._decode[size] = self._capture(
                        functools.partial(self._decode_forward, size), pool
                    )
                else:
                    shape = self.mixed_shapes[size]
                    self._mixed[size] = self._capture(
                        functools.partial(self._mixed_forward, shape), pool
                    )
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - t0
        return self.capture_seconds

    def _capture(self, forward: Callable[[], torch.Tensor], pool: Any) -> _Graph:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up: compile kernels, settle allocations
            for _ in range(2):
                forward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = forward()
        return _Graph(graph, out)

    # -- the captured forwards ---------------------------------------------------------------
    def _decode_forward(self, b: int) -> torch.Tensor:
        v = self.buffers.view
        slots = v("decode_slots", b)
        launch = self._decode_launch(b)
        meta = AttentionMetadata(
            slot_of_token=v("slot_of_token", b),
            positions=v("positions", b),
            num_decodes=b,
            decode_slots=slots,
            decode_context_lens=v("decode_lens", b),
            max_decode_context=self.max_len,
            prefills=[],
            launch=FixedLaunch(launch, decode_splits(b, self.kv_heads, self.sms)),
        )
        ids = resolve_pending(v("ids", b), self.last_token)
        hidden = self.model(ids, ForwardContext(meta, self.cache, self.attention, self.rotary))
        if not self.lm_head_in_graph:
            return hidden
        logits = self.model.compute_logits(hidden, upcast=False)
        assert logits is not None, "a single rank samples"
        return logits

    def _decode_launch(self, decodes: int) -> DecodeLaunch:
        """The decode kernel's launch shape for a graph with room for ``decodes``."""
        return decode_launch(decodes, self.kv_heads, self.group, self.sms)

    def _mixed_forward(self, m: MixedShape) -> torch.Tensor:
        v = self.buffers.view
        launch = self._decode_launch(m.decodes)
        chunks = ChunkTable(
            v("chunk_slot", m.chunks),
            v("chunk_start", m.chunks),
            v("chunk_len", m.chunks),
            v("chunk_off", m.chunks),
            m.tokens,
            v("tile_chunk", m.tiles),
            v("tile_block", m.tiles),
        )
        meta = AttentionMetadata(
            slot_of_token=v("slot_of_token", m.tokens),
            positions=v("positions", m.tokens),
            num_decodes=m.decodes,
            decode_slots=v("decode_slots", m.decodes),
            decode_context_lens=v("decode_lens", m.decodes),
            max_decode_context=self.max_len,
            prefills=[],
            chunks=chunks,
            # One split per sequence: a mixed step is bound by its chunk's matmuls, and
            # splits would add a merge launch.
            launch=FixedLaunch(launch, 1, v("decode_count", 1)),
        )
        ids = resolve_pending(v("ids", m.tokens), self.last_token)
        hidden = self.model(ids, ForwardContext(meta, self.cache, self.attention, self.rotary))
        return hidden[v("sample_idx", m.samples)]

    # -- replay ------------------------------------------------------------------------------
    def decode_bucket(self, n: int) -> int | None:
        for b in self.decode_buckets:
            if b >= n:
                return b
        return None

    def mixed_shape(
        self, tokens: int, decodes: int, chunks: int, tiles: int, samples: int
    ) -> MixedShape | None:
        for t in self.token_buckets:
            if t >= tokens:
                m = self.mixed_shapes[t]
                fits = (
                    decodes <= m.decodes
                    and chunks <= m.chunks
                    and tiles <= m.tiles
                    and samples <= m.samples
                )
                return m if fits else None
        return None

    def replay_decode(self, bucket: int, n: int) -> torch.Tensor | None:
        """Logits [n, vocab] of a decode step whose inputs are in the step buffer (None on
        a tensor-parallel rank that does not sample)."""
        out = self._replay("decode", bucket)
        if self.lm_head_in_graph:
            return out[:n]
        return self.model.compute_logits(out[:n], upcast=False)

    def replay_mixed(self, shape: MixedShape, samples: int) -> torch.Tensor:
        """Hidden states [samples, hidden] of the step's sampled rows."""
        return self._replay("mixed", shape.tokens)[:samples]

    def _replay(self, kind: str, size: int) -> torch.Tensor:
        """Replay the graph of that kind and size; its output tensor."""
        g = (self._decode if kind == "decode" else self._mixed)[size]
        g.graph.replay()
        self.replays[kind] += 1
        return g.out
