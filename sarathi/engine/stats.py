"""The engine's counters, and the read-only snapshot of them that ``/metrics`` and
``/health`` read (published by the engine loop after every step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EngineStats:
    """Counters of the engine's life."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    # Prefix caching: prompt tokens looked up at admission, and those found cached.
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_evictions: int = 0  # cached blocks dropped (PrefixCacheCounters.evictions)
    # AdaptiVocab: tokens of finished requests under the patch tokenizer and, for the same
    # text, under the base tokenizer (their difference is what the domain vocabulary saved).
    patched_prompt_tokens: int = 0
    base_prompt_tokens: int = 0
    patched_generation_tokens: int = 0
    base_generation_tokens: int = 0


@dataclass(frozen=True)
class EngineSnapshot:
    """What the engine looked like after a step: queue lengths, counters, KV cache stats,
    and the AdaptiVocab facts (reduction ratio, slot capacity in base-tokenizer tokens)."""

    num_running: int = 0
    num_waiting: int = 0
    stats: EngineStats = field(default_factory=EngineStats)
    cache: dict[str, Any] = field(default_factory=dict)
    reduction_ratio: float = 1.0
    text_capacity_base_tokens: int = 0
    patched: bool = False
    prefix_cached_blocks: int = 0  # blocks in the prefix cache (shared or evictable)
    prefix_evictable_blocks: int = 0  # of those, the ones no request uses (free to drop)
