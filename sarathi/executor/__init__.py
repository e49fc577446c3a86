"""Executors run the workers: ``uni`` in process, ``mp`` one process per rank on this host,
``ray`` one Ray actor per rank (across machines).

A failed worker makes ``collect`` raise ``WorkerError`` (``WorkerDiedError`` when it died or
hung) and ``is_alive()`` False.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult, TokenMasks
from sarathi.executor.errors import WorkerDiedError, WorkerError
from sarathi.worker.cache_engine import CachePlan

logger = logging.getLogger("sarathi")


class StepHandle:
    """A launched step; only the executor that launched it reads what is inside."""


class Executor(Protocol):
    # ``launch`` may be called again before the previous step is collected: the next step
    # then reads the previous one's sampled tokens on the device (in-process and mp).
    overlaps: bool

    @property
    def cuda_graphs(self) -> bool:
        """Whether the workers replay CUDA graphs (captured at start-up), on every rank."""
        ...

    def capacity(self) -> CacheCapacity: ...

    def cache_plan(self) -> CachePlan: ...

    def launch(self, step: StepInput) -> StepHandle:
        """Start the step on the workers; returns at once where the workers allow."""
        ...

    def sample(self, handle: StepHandle, masks: TokenMasks | None) -> None:
        """Queue the sampling of a step launched with ``masks_follow``, with its grammar
        masks (computed while its forward ran). Only executors that overlap get such
        steps."""
        ...

    def collect(self, handle: StepHandle) -> StepResult:
        """Wait for a launched step's sampled tokens."""
        ...

    def cache_stats(self) -> dict[str, Any]: ...

    def is_alive(self) -> bool: ...

    def shutdown(self) -> None: ...


def available_cpus() -> int:
    """The cores this process may run on: its affinity set where the OS has one (a
    container's or taskset's cpuset is smaller than the host), else the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_tensor_parallel(spec: Any) -> None:
    """Refuse a split the model cannot take before any process starts (clear error early);
    warn when this host's ranks outnumber its cores."""
    import torch

    from sarathi.model_executor.parallel import head_layout
    from sarathi.model_executor.parallel.sharding import split_evenly

    tp, s = spec.config.parallel.tensor_parallel_size, spec.shape
    cpus = available_cpus()
    # mp runs every rank as a process here (ray's may be on other machines); more ranks
    # than cores time-share them, and each all-reduce waits for a rank that is not running.
    if spec.config.parallel.resolved_executor == "mp" and tp > cpus:
        logger.warning(
            "tensor_parallel_size %d exceeds the %d CPU cores this process may use: the "
            "ranks will share cores and run slowly",
            tp,
            cpus,
        )
    head_layout(s.num_heads, s.num_kv_heads, 0, tp)
    split_evenly(s.intermediate_size, 0, tp, "the model's intermediate_size")
    if spec.device.type == "cuda":
        first = spec.device.index or 0
        have = torch.cuda.device_count()
        if spec.config.parallel.resolved_executor == "mp" and first + tp > have:
            raise ValueError(
                f"tensor_parallel_size {tp} from cuda:{first} needs {first + tp} "
                f"GPUs on this host; it has {have}"
            )


def create_executor(spec: Any) -> Executor:
    kind = spec.config.parallel.resolved_executor
    if kind == "uni":
        from sarathi.executor.uni import UniExecutor

        return UniExecutor(spec)
    check_tensor_parallel(spec)
    if kind == "mp":
        from sarathi.executor.mp import MPExecutor

        return MPExecutor(spec)
    from sarathi.executor.ray_executor import RayExecutor

    return RayExecutor(spec)


__all__ = ["Executor", "StepHandle", "WorkerDiedError", "WorkerError", "create_executor"]
