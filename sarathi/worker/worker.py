"""A worker owns one device: the model weights, the KV cache and the model runner."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sarathi.config import EngineConfig
from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult
from sarathi.model_executor.attention import get_attention_backend
from sarathi.model_executor.layers.sampler import Sampler
from sarathi.model_executor.model_config import ModelShape
from sarathi.model_executor.model_loader import build_model, iter_checkpoint, load_weights
from sarathi.worker.cache_engine import capacity_of, create_cache, plan_cache
from sarathi.worker.model_runner import ModelRunner


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


class Worker:
    def __init__(self, spec: WorkerSpec, weights=None) -> None:
        self.spec = spec
        self.model = build_model(spec.shape, spec.dtype, spec.device)
        load_weights(self.model, weights if weights is not None else iter_checkpoint(spec.model_path))
        cfg = spec.config
        free = None
        if spec.device.type == "cuda":
            free_now, total = torch.cuda.mem_get_info(spec.device)
            used_elsewhere = total - free_now
            free = int(total * cfg.cache.gpu_memory_utilization) - used_elsewhere
            # Leave room for one step's activations (logits of a full chunk dominate).
            free -= 4 * cfg.scheduler.chunk_size * spec.shape.vocab_size * 4
            if free <= 0:
                raise ValueError("no GPU memory is left for the KV cache; raise "
                                 "--gpu-memory-utilization or use a smaller model")
        plan = plan_cache(cfg.cache, spec.device, cfg.scheduler.max_num_seqs, spec.max_model_len,
                          free)
        self.cache = create_cache(plan, cfg.cache, spec.shape, spec.dtype, spec.device)
        attention = get_attention_backend(cfg.attention.attention_backend)
        sampler = Sampler(set(spec.eos_ids), spec.device, cfg.model.seed)
        self.runner = ModelRunner(self.model, self.cache, attention, sampler,
                                  spec.max_model_len, spec.device)

    def capacity(self) -> CacheCapacity:
        return capacity_of(self.cache)

    def execute(self, step: StepInput) -> StepResult:
        return self.runner.execute(step)

    def cache_stats(self) -> dict:
        return self.cache.stats()

    def shutdown(self) -> None:
        self.cache.close()
