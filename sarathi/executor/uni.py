"""The in-process executor: one worker, called directly."""

from __future__ import annotations

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult
from sarathi.worker.worker import Worker, WorkerSpec


class UniExecutor:
    # The worker is in this process: a step can be launched before the previous one's
    # tokens are collected, and the runner reads pending tokens from the device.
    overlaps = True

    def __init__(self, spec: WorkerSpec, weights=None) -> None:
        self.worker = Worker(spec, weights)

    def capacity(self) -> CacheCapacity:
        return self.worker.capacity()

    def cache_plan(self):
        return self.worker.plan

    def execute(self, step: StepInput) -> StepResult:
        return self.worker.execute(step)

    def launch(self, step: StepInput) -> object:
        return self.worker.launch(step)

    def collect(self, launched: object) -> StepResult:
        return self.worker.collect(launched)

    def cache_stats(self) -> dict:
        return self.worker.cache_stats()

    def is_alive(self) -> bool:
        return True  # in this process: if it is gone, so is the engine

    def shutdown(self) -> None:
        self.worker.shutdown()
