"""The in-process executor: one worker, called directly."""

from __future__ import annotations

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult
from sarathi.worker.worker import Worker, WorkerSpec


class UniExecutor:
    def __init__(self, spec: WorkerSpec, weights=None) -> None:
        self.worker = Worker(spec, weights)

    def capacity(self) -> CacheCapacity:
        return self.worker.capacity()

    def cache_plan(self):
        return self.worker.plan

    def execute(self, step: StepInput) -> StepResult:
        return self.worker.execute(step)

    def cache_stats(self) -> dict:
        return self.worker.cache_stats()

    def is_alive(self) -> bool:
        return True  # in this process: if it is gone, so is the engine

    def shutdown(self) -> None:
        self.worker.shutdown()
