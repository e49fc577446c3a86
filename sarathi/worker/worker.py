"""A worker owns one device: the model weights, the KV cache and the model runner."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch

from sarathi.config import DEFAULT_INIT_METHOD, EngineConfig
from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult, TokenMasks
from sarathi.model_executor.attention import resolve_attention_backend, uses_paged_cache
from sarathi.model_executor.dummy_weights import init_dummy_weights
from sarathi.model_executor.layers import gemv
from sarathi.model_executor.model_loader import (
    build_model,
    iter_checkpoint,
    load_weights,
    patch_checkpoint,
)
from sarathi.model_executor.model_shape import ModelShape
from sarathi.model_executor.parallel import TPGroup, head_layout
from sarathi.worker.cache_engine import (
    capacity_of,
    create_cache,
    gpu_kv_room,
    plan_cache,
)
from sarathi.worker.model_runner import InflightBatch, ModelRunner


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to start; resolved by the engine once for all workers."""

    config: EngineConfig
    model_path: str
    shape: ModelShape
    dtype: torch.dtype
    device: torch.device
    max_model_len: int
    eos_ids: frozenset[int]
    reduction_ratio: float = 1.0  # patched / base tokens (AdaptiVocab); sizes the cache
    patch_tokenizer: str | None = None  # patch the base checkpoint's rows at load time
    init_method: str = DEFAULT_INIT_METHOD


class Worker:
    def __init__(
        self,
        spec: WorkerSpec,
        weights: Iterable[tuple[str, torch.Tensor]] | None = None,
        tp: TPGroup | None = None,
    ) -> None:
        self.spec = spec
        cfg = spec.config
        chunk_size = cfg.scheduler.chunk_size
        if chunk_size is None:
            raise ValueError("the worker needs the engine's resolved chunk_size")
        # CUDA graphs pad their batches with a slot of their own: plan it beside the
        # requests' slots, or a one-sequence engine would have none to spare and run eagerly.
        graph_pad = int(spec.device.type == "cuda" and not cfg.model.enforce_eager)
        slots = cfg.scheduler.max_num_seqs + graph_pad
        # The largest all-reduce: a step's tokens (as many as the step buffers hold) by
        # the hidden size; and the batch-1 row-parallel matmuls' float32 split sums, which
        # the norm after them all-reduces (all_reduce_norm).
        step_tokens = max(chunk_size, slots)
        hidden = spec.shape.hidden_size
        tp = (tp or TPGroup()).with_symmetric_all_reduce(
            step_tokens * hidden,
            spec.dtype,
            gemv.MAX_SPLITS * hidden,
            spec.device,
            disabled=cfg.parallel.disable_custom_all_reduce,
        )
        self.tp = tp
        self.model = build_model(spec.shape, spec.dtype, spec.device, tp)
        dummy = spec.config.model.load_format == "dummy" and weights is None
        if dummy:
            # Distinct noise per rank: dummy outputs are for timing, not for comparison.
            init_dummy_weights(self.model, spec.config.model.seed + tp.rank)
        else:
            if weights is None:
                # Lazy slices: a rank reads only its part; patching needs the whole vocab
                # matrices.
                weights = iter_checkpoint(
                    spec.model_path, lazy=tp.world_size > 1 and spec.patch_tokenizer is None
                )
                if spec.patch_tokenizer is not None:
                    from sarathi.transformers_utils.tokenizer import load_patch_tokenizer

                    weights = patch_checkpoint(
                        weights,
                        load_patch_tokenizer(spec.patch_tokenizer),
                        spec.init_method,
                        spec.shape.tie_word_embeddings,
                    )
            load_weights(self.model, weights)
        free = None
        if spec.device.type == "cuda":
            free_now, total = torch.cuda.mem_get_info(spec.device)
            # Leave room for one step's activations (logits of a full chunk dominate).
            free = gpu_kv_room(
                cfg.cache, free_now, total, 4 * chunk_size * spec.shape.vocab_size * 4
            )
        # This rank's cache holds only its KV heads.
        cache_shape = replace(
            spec.shape,
            num_kv_heads=head_layout(
                spec.shape.num_heads, spec.shape.num_kv_heads, tp.rank, tp.world_size
            ).num_kv_heads,
        )
        backend = resolve_attention_backend(cfg.attention.attention_backend, spec.device)
        self.plan = plan_cache(
            cfg.cache,
            cache_shape,
            spec.dtype,
            spec.device,
            slots,
            spec.max_model_len,
            spec.reduction_ratio,
            free,
            paged=uses_paged_cache(backend),
        )
        self.cache, attention = create_cache(
            self.plan, cache_shape, spec.dtype, spec.device, backend, self.model.kernels
        )
        self.runner = ModelRunner(
            self.model,
            self.cache,
            attention,
            spec.max_model_len,
            chunk_size,
            spec.device,
            set(spec.eos_ids),
            cfg.model.seed,
        )
        if not cfg.model.enforce_eager:  # compile and capture everything now
            self.runner.capture_graphs()
            self.runner.sampler.warm_up(spec.shape.vocab_size, spec.dtype)

    @property
    def cuda_graphs(self) -> bool:
        """Whether steps replay CUDA graphs (captured at start-up)."""
        return self.runner.graphs is not None

    @property
    def _held(self) -> int:
        """Slots, and blocks, the engine holds for itself: the graphs' pad slot and its one
        block, taken at start-up for good. Requests never get them."""
        return 1 if self.cuda_graphs else 0

    def capacity(self) -> CacheCapacity:
        cap, held = capacity_of(self.cache), self._held
        return replace(cap, num_blocks=cap.num_blocks - held, max_slots=cap.max_slots - held)

    def launch(self, step: StepInput) -> InflightBatch:
        return self.runner.launch(step)

    def sample(self, inflight: InflightBatch, masks: TokenMasks | None) -> InflightBatch:
        return self.runner.sample(inflight, masks)

    def collect(self, inflight: InflightBatch) -> StepResult:
        return self.runner.collect(inflight)

    def execute(self, step: StepInput) -> StepResult:
        return self.runner.execute(step)

    def cache_stats(self) -> dict[str, Any]:
        """The cache's statistics, with its slots and blocks counted as ``capacity`` counts
        them (without what the engine holds for itself), so an idle engine reports none used
        (what /metrics' usage gauge reads)."""
        stats, held = self.cache.stats(), self._held
        for key in ("slots_used", "max_slots", "blocks_used", "blocks_total"):
            if key in stats:
                stats[key] -= held
        return stats

    def shutdown(self) -> None:
        self.cache.close()
