"""One tensor-parallel rank, as run inside an ``mp`` process or a Ray actor.

It joins the process group, builds its ``Worker`` (its shard of the weights and its KV
heads' cache) and runs each step the driver broadcasts. Only rank 0 answers a step: it
holds the gathered logits and the sampler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepResult
from sarathi.engine.model_setup import bind_thread_device
from sarathi.executor.step_codec import decode_step
from sarathi.model_executor.parallel import init_tp_group
from sarathi.worker.cache_engine import CachePlan
from sarathi.worker.model_runner import InflightBatch, ModelRunner
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
        profile_dir: str = "",
        cpu_threads: int | None = None,
    ) -> None:
        """``profile_dir``: where to write a torch profiler table of ten steps (the
        driver's ``SARATHI_RANK_PROFILE``; empty: none). ``cpu_threads``: intra-op threads
        on a CPU device (None: the host's cores shared out among the ranks)."""
        bind_thread_device(device)
        if device.type != "cuda":
            # Ranks on one host share its cores; oversubscribed threads slow every rank.
            torch.set_num_threads(cpu_threads or max(1, (os.cpu_count() or 1) // world_size))
        self.rank = rank
        self.device = device
        self.tp = init_tp_group(rank, world_size, init_method, device, timeout_s)
        self.worker = Worker(replace(spec, device=device), tp=self.tp)
        self.profile = _StepProfile(profile_dir, rank, device) if profile_dir else None

    def ready(self) -> RankReady:
        return RankReady(
            self.rank,
            os.getpid(),
            self.worker.capacity(),
            self.worker.plan,
            self.worker.cuda_graphs,
        )

    def launch(self, payload: bytes) -> InflightBatch:
        """Queue one ``StepInput`` as ``step_codec`` encoded it (once, by the driver, for
        all ranks) on this rank's device."""
        if self.profile is not None:
            self.profile.tick()
        return self.worker.launch(decode_step(payload))

    def sample(self, inflight: InflightBatch, payload: bytes) -> InflightBatch:
        """Queue the sampling of a step launched with ``masks_follow``; ``payload`` is an
        encoded ``StepInput`` carrying only the grammar masks."""
        return self.worker.sample(inflight, decode_step(payload).token_masks)

    @staticmethod
    def wait(inflight: InflightBatch) -> None:
        """Block until the step's ids are on the host (safe beside another ``launch``)."""
        ModelRunner.wait(inflight)

    def reply(self, inflight: InflightBatch) -> StepReply | None:
        """The step's answer: rank 0's tokens and cache stats; None on other ranks."""
        result = self.worker.collect(inflight)
        if self.rank != 0:
            return None
        return StepReply(result, self.worker.cache_stats())

    def step(self, payload: bytes) -> StepReply | None:
        """``launch`` then ``reply``: one step start to end."""
        return self.reply(self.launch(payload))

    def shutdown(self) -> None:
        self.worker.shutdown()
        if self.tp.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


@dataclass(frozen=True)
class DeviceGaps:
    """Where a device sat idle over profiled steps: ``span_us`` from its first activity to
    its last, ``busy_us`` covered by at least one kernel or copy, and the longest idle
    gaps as (microseconds, activity before, activity after), longest first."""

    span_us: float
    busy_us: float
    gaps: list[tuple[float, str, str]]

    def describe(self) -> str:
        idle = self.span_us - self.busy_us
        lines = [
            f"device idle {idle:.0f} us of {self.span_us:.0f} us "
            f"({idle / max(self.span_us, 1e-9):.1%}); longest gaps:"
        ]
        lines += [f"  {us:9.1f} us after {before[:60]} before {after[:60]}"
                  for us, before, after in self.gaps]  # fmt: skip
        return "\n".join(lines)


def device_gaps(activities: list[tuple[float, float, str]], most: int = 8) -> DeviceGaps | None:
    """The idle gaps between device ``activities`` ((start, end, name), microseconds).
    Overlapping activities (programmatic dependent launch, several streams) count once.
    None without activities."""
    if not activities:
        return None
    ordered = sorted(activities)
    first, end, last_name = ordered[0]
    busy = 0.0
    run_start = first
    gaps: list[tuple[float, str, str]] = []
    for start, stop, name in ordered[1:]:
        if start > end:
            busy += end - run_start
            gaps.append((start - end, last_name, name))
            run_start = start
        if stop >= end:
            end, last_name = stop, name
    busy += end - run_start
    gaps.sort(key=lambda g: -g[0])
    return DeviceGaps(end - first, busy, gaps[:most])


class _StepProfile:
    """Profiles steps ``_WARM`` to ``_WARM + _ACTIVE`` of a rank with the torch profiler
    and writes to ``folder/rank<N>.txt`` how long the device sat idle between its
    activities (``device_gaps``: a rank that waits on its host shows it there) and the
    per-op table (CPU and CUDA time)."""

    _WARM, _ACTIVE = 20, 10

    def __init__(self, folder: str, rank: int, device: torch.device) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"rank{rank}.txt")
        activities = [ProfilerActivity.CPU]
        self.sort = "cpu_time_total"
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
            self.sort = "cuda_time_total"
        self.prof = profile(
            activities=activities,
            schedule=schedule(wait=self._WARM - 2, warmup=2, active=self._ACTIVE, repeat=1),
            on_trace_ready=self._write,
        )
        self.launches = 0

    def tick(self) -> None:
        """Called at each step's launch: a profiler step runs from one launch to the next."""
        if self.launches == 0:
            self.prof.start()
        elif self.launches <= self._WARM + self._ACTIVE:
            self.prof.step()
        if self.launches == self._WARM + self._ACTIVE:
            self.prof.stop()
        self.launches += 1

    def _write(self, prof: Any) -> None:
        table = prof.key_averages().table(sort_by=self.sort, row_limit=40)
        device = [
            (e.time_range.start, e.time_range.end, e.name)
            for e in prof.events()
            # The profiler's step markers have device-side copies that span whole steps.
            if e.device_type != torch.autograd.DeviceType.CPU
            and not e.is_user_annotation
            and not e.name.startswith("ProfilerStep")
        ]
        gaps = device_gaps(device)
        with open(self.path, "w") as f:
            f.write(f"{self._ACTIVE} steps after {self._WARM}\n")
            f.write(f"{gaps.describe() if gaps else 'device: no kernel events'}\n{table}\n")


def rank_device(base: torch.device, rank: int) -> torch.device:
    """Rank r of a host uses the r-th GPU after ``base``'s index; on the CPU, the CPU."""
    if base.type != "cuda":
        return base
    return torch.device("cuda", (base.index or 0) + rank)
