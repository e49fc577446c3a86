"""One tensor-parallel rank, as run inside an ``mp`` process or a Ray actor.

It joins the process group, builds its ``Worker`` (its shard of the weights and its KV
heads' cache) and runs each step the driver broadcasts. Only rank 0 answers a step: it
holds the gathered logits and the sampler.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepResult
from sarathi.engine.model_setup import bind_thread_device
from sarathi.envs import env
from sarathi.executor.step_codec import decode_step
from sarathi.model_executor.parallel import init_tp_group
from sarathi.worker.cache_engine import CachePlan
from sarathi.worker.worker import Worker, WorkerSpec


@dataclass
class RankReady:
    """What a rank reports once it has started."""

    rank: int
    pid: int
    capacity: CacheCapacity
    plan: CachePlan
    cuda_graphs: bool


@dataclass
class StepReply:
    """Rank 0's answer to a step; the cache stats ride along so that reading them after
    every step costs no extra round trip."""

    result: StepResult
    cache_stats: dict[str, Any]


class RankWorker:
    def __init__(
        self,
        spec: WorkerSpec,
        rank: int,
        world_size: int,
        init_method: str,
        device: torch.device,
        timeout_s: float,
    ) -> None:
        bind_thread_device(device)
        if device.type != "cuda":
            # Ranks on one host share its cores; oversubscribed threads slow every rank.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        self.rank = rank
        self.tp = init_tp_group(rank, world_size, init_method, device, timeout_s)
        self.worker = Worker(replace(spec, device=device), tp=self.tp)
        folder = env("SARATHI_RANK_PROFILE")
        self.profile = _StepProfile(folder, rank, device) if folder else None

    def ready(self) -> RankReady:
        return RankReady(
            self.rank,
            os.getpid(),
            self.worker.capacity(),
            self.worker.plan,
            self.worker.runner.graphs is not None,
        )

    def step(self, payload: bytes) -> StepReply | None:
        """Run one ``StepInput`` as ``step_codec`` encoded it (once, by the driver, for all
        ranks); only rank 0 has something to say."""
        if self.profile is None:
            result = self.worker.execute(decode_step(payload))
        else:
            with self.profile.step():
                result = self.worker.execute(decode_step(payload))
        if self.rank != 0:
            return None
        return StepReply(result, self.worker.cache_stats())

    def shutdown(self) -> None:
        self.worker.shutdown()
        if self.tp.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


class _StepProfile:
    """Profiles steps ``_WARM`` to ``_WARM + _ACTIVE`` of a rank with the torch profiler
    and writes its per-op table (CPU and CUDA time) to ``folder/rank<N>.txt``."""

    _WARM, _ACTIVE = 20, 10

    def __init__(self, folder: str, rank: int, device: torch.device) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"rank{rank}.txt")
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.prof = profile(
            activities=activities,
            schedule=schedule(wait=self._WARM - 2, warmup=2, active=self._ACTIVE, repeat=1),
            on_trace_ready=self._write,
        )
        self.steps = 0

    @contextmanager
    def step(self) -> Iterator[None]:
        if self.steps == 0:
            self.prof.start()
        try:
            yield
        finally:
            self.steps += 1
            if self.steps <= self._WARM + self._ACTIVE:
                self.prof.step()
            if self.steps == self._WARM + self._ACTIVE:
                self.prof.stop()

    def _write(self, prof: Any) -> None:
        sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=40)
        with open(self.path, "w") as f:
            f.write(f"{self._ACTIVE} steps after {self._WARM}\n{table}\n")


def rank_device(base: torch.device, rank: int) -> torch.device:
    """Rank r of a host uses the r-th GPU after ``base``'s index; on the CPU, the CPU."""
    if base.type != "cuda":
        return base
    return torch.device("cuda", (base.index or 0) + rank)
