"""Warnings for flags a user gave that this run does not read.

A combination that makes no sense is refused by ``EngineConfig.validate``; these are the
benign ones, where the run legitimately goes without the flag (a vLLM command line's
``--block-size`` under vAttention, a timeout the in-process executor has no one to watch
with), which a user must still be told of rather than find out. They need what is known
only once the model and its cache are planned (the device, the executor, the cache's
backend), so the engine calls ``warn_unread_flags`` then, with the config as given.
"""

from __future__ import annotations

import logging

from sarathi.config import EngineConfig
from sarathi.core.scheduler import CacheCapacity
from sarathi.engine.model_setup import ModelSetup
from sarathi.worker.cache_engine import CachePlan, unread_fraction

logger = logging.getLogger("sarathi")


def warn_unread_flags(
    config: EngineConfig, setup: ModelSetup, plan: CachePlan, capacity: CacheCapacity
) -> None:
    """One warning per flag in ``config`` (as the user gave it) that this run ignores."""
    s, c, p = config.scheduler, config.cache, config.parallel
    if s.scheduler == "vllm" and s.chunk_size is not None and s.chunk_size < setup.max_model_len:
        # The vllm policy prefills whole prompts: its step budget is raised to the longest
        # one (Scheduler._schedule_vllm), which the user's budget did not say.
        logger.warning(
            "chunk_size %d is below max_model_len %d: the vllm scheduler prefills whole "
            "prompts, so a step takes up to %d tokens (use --scheduler sarathi for a "
            "token budget per step)",
            s.chunk_size,
            setup.max_model_len,
            setup.max_model_len,
        )
    unread = unread_fraction(c, setup.device)
    if unread is not None:
        logger.warning("gpu_memory_utilization %s is ignored %s", c.gpu_memory_utilization, unread)
    timeouts = [
        name for name in ("step_timeout", "worker_start_timeout") if getattr(p, name) is not None
    ]
    if timeouts and p.resolved_executor == "uni":
        # The in-process worker runs in the engine's own thread: nothing is left to watch
        # it, so a hung step hangs the engine (the mp and ray executors time out).
        logger.warning(
            "%s %s ignored by the in-process executor (its worker runs in this process, "
            "unwatched); the mp and ray executors time their workers out",
            " and ".join(timeouts),
            "is" if len(timeouts) == 1 else "are",
        )
    if c.block_tokens is not None and plan.block_tokens is None:
        # A warning, not an error: vLLM command lines pass --block-size as a habit, and they
        # are meant to run as they are.
        logger.warning(
            "block_tokens (vLLM's --block-size) %d is ignored: it sizes the blocks of the "
            "paged cache (--attention-backend paged); this vAttention cache's blocks are "
            "one page of %d tokens (set by --page-bytes)",
            c.block_tokens,
            capacity.tokens_per_block,
        )
    if c.expected_request_tokens is not None and plan.backend in ("paged", "dense"):
        # A warning, not an error: comparisons of the caches pass one command line to all.
        logger.warning(
            "expected_request_tokens %d is ignored: it sizes the slots of vAttention's "
            "mapped caches; the %s cache has %d slots (%s)",
            c.expected_request_tokens,
            plan.backend,
            capacity.max_slots,
            "--max-num-seqs"
            if plan.backend == "paged"
            else "as many as its budget holds at --max-model-len tokens each",
        )
