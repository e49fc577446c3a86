"""Creating the KV cache from the configuration.

The cache engine turns the config (backend, layout, budget) and the model shape into a
``vattention.KVCache`` and reports its capacity to the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import vattention
from sarathi.config import CacheConfig
from sarathi.core.scheduler import CacheCapacity
from sarathi.model_executor.model_config import ModelShape

HOST_DEFAULT_BUDGET = 4 * 1024**3


@dataclass(frozen=True)
class CachePlan:
    backend: str
    max_slots: int
    max_len: int
    budget: int | None


def plan_cache(config: CacheConfig, device: torch.device, max_slots: int, max_len: int,
               free_device_bytes: int | None = None) -> CachePlan:
    backend = config.kv_cache_backend
    if backend == "auto":
        backend = "dense"
    budget = config.kv_cache_memory
    if budget is None:
        budget = free_device_bytes if device.type == "cuda" else HOST_DEFAULT_BUDGET
    return CachePlan(backend, max_slots, max_len, budget)


def create_cache(plan: CachePlan, config: CacheConfig, shape: ModelShape, dtype: torch.dtype,
                 device: torch.device) -> vattention.KVCache:
    return vattention.KVCache(
        num_layers=shape.num_layers, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim,
        max_slots=plan.max_slots, max_len=plan.max_len, dtype=dtype, device=device,
        layout=config.kv_layout, page_size=config.page_size, memory_budget=plan.budget,
        backend=plan.backend)


def capacity_of(cache: vattention.KVCache) -> CacheCapacity:
    return CacheCapacity(num_units=cache.num_units, tokens_per_unit=cache.tokens_per_page,
                         max_slots=cache.max_slots)
