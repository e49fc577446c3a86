"""The in-process executor: one worker, called directly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult, TokenMasks
from sarathi.engine.model_setup import bind_thread_device
from sarathi.executor import StepHandle
from sarathi.worker.cache_engine import CachePlan
from sarathi.worker.model_runner import InflightBatch
from sarathi.worker.worker import Worker, WorkerSpec


@dataclass
class _Launched(StepHandle):
    inflight: InflightBatch


class UniExecutor:
    # The worker is in this process: a step can be launched before the previous one's
    # tokens are collected, and the runner reads pending tokens from the device.
    overlaps = True

    def __init__(
        self, spec: WorkerSpec, weights: Iterable[tuple[str, torch.Tensor]] | None = None
    ) -> None:
        bind_thread_device(spec.device)
        self.worker = Worker(spec, weights)

    @property
    def cuda_graphs(self) -> bool:
        return self.worker.cuda_graphs

    def capacity(self) -> CacheCapacity:
        return self.worker.capacity()

    def cache_plan(self) -> CachePlan:
        return self.worker.plan

    def launch(self, step: StepInput) -> StepHandle:
        return _Launched(self.worker.launch(step))

    def sample(self, handle: StepHandle, masks: TokenMasks | None) -> None:
        assert isinstance(handle, _Launched)
        handle.inflight = self.worker.sample(handle.inflight, masks)

    def collect(self, handle: StepHandle) -> StepResult:
        assert isinstance(handle, _Launched)
        return self.worker.collect(handle.inflight)

    def cache_stats(self) -> dict[str, Any]:
        return self.worker.cache_stats()

    def is_alive(self) -> bool:
        return True  # in this process: if it is gone, so is the engine

    def shutdown(self) -> None:
        self.worker.shutdown()
