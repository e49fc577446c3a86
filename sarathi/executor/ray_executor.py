"""The ``ray`` executor: one Ray actor per tensor-parallel rank, possibly on several machines.

The engine joins the Ray cluster named by ``--ray-address`` (or ``$RAY_ADDRESS``; without
either it starts a private local Ray). Each actor asks for one GPU (on a GPU run) and the
ranks meet over TCP at rank 0's node. Per step the encoded ``StepInput`` (``step_codec``: the
bytes the ``mp`` executor writes into its ring) goes to every actor and only rank 0's call
returns a result; a dead actor surfaces as ``RayActorError`` on its own call, which is
watched along with rank 0's, so a lost node fails the step at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult, TokenMasks
from sarathi.envs import env
from sarathi.executor import StepHandle
from sarathi.executor.errors import WorkerDiedError, WorkerError, rank_failure
from sarathi.executor.rank_worker import RankReady, RankWorker, StepReply
from sarathi.executor.step_codec import encode_step
from sarathi.worker.cache_engine import CachePlan
from sarathi.worker.worker import WorkerSpec

# How long a failed step waits for a possibly dead peer to be reported before blaming the
# rank that raised (only on the failure path).
_BLAME_GRACE_S = 3.0


class RankActorBody:
    """The actor's class body (wrapped with ``ray.remote`` at runtime, so importing this
    module never needs Ray)."""

    def __init__(self) -> None:
        self._worker: RankWorker | None = None
        self._stop = threading.Event()

    def rendezvous_address(self) -> str:
        """A TCP address on this actor's node where rank 0's store will listen."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"tcp://{ray.util.get_node_ip_address()}:{port}"

    def start(
        self,
        spec: WorkerSpec,
        rank: int,
        world_size: int,
        init_method: str,
        timeout_s: float,
        profile_dir: str,
    ) -> RankReady:
        # Ray shows the actor only its own GPU(s): its device is always cuda:0.
        device = torch.device("cuda", 0) if spec.device.type == "cuda" else spec.device
        self._worker = RankWorker(
            spec, rank, world_size, init_method, device, timeout_s, profile_dir
        )
        return self._worker.ready()

    def step(self, payload: bytes) -> StepReply | None:
        assert self._worker is not None, "start() first"
        return self._worker.step(payload)

    def pid(self) -> int:
        return os.getpid()

    def watch(self) -> None:
        """Returns only at shutdown: while it is pending the actor is alive, and the moment
        the actor dies this call fails, which ``is_alive`` sees without blocking. (It runs on
        the actor's second thread; the actor dies with its driver, so it cannot leak.)"""
        self._stop.wait()

    def shutdown(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.shutdown()


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return  # the caller (a test, a notebook) already joined a cluster: use it
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, ignore_reinit_error=True)
    else:
        ray.init(include_dashboard=False, ignore_reinit_error=True)


@dataclass
class _Calls(StepHandle):
    refs: list[Any]


class RayExecutor:
    # A step is one blocking call per actor, and an actor may run two calls at once
    # (max_concurrency=2, for the watch call): a step is sent only after the previous one
    # returned.
    overlaps = False

    def __init__(self, spec: WorkerSpec) -> None:
        try:
            import ray
        except ImportError as e:
            raise ValueError(
                "--executor ray needs Ray: pip install -e '.[ray]' in the repository"
            ) from e
        self._ray = ray
        pc = spec.config.parallel
        self.world_size = pc.tensor_parallel_size
        self.step_timeout = pc.resolved_step_timeout
        self._error: WorkerError | None = None
        self._stats: dict[str, Any] = {}
        _connect(pc.ray_address)
        gpu = spec.device.type == "cuda"
        actor_cls = ray.remote(RankActorBody).options(
            num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_concurrency=2, max_restarts=0
        )
        self._actors = [actor_cls.remote() for _ in range(self.world_size)]
        try:
            ready = self._start(spec, pc.resolved_worker_start_timeout)
        except BaseException:
            self._kill_all()
            raise
        self._watch = [a.watch.remote() for a in self._actors]
        self._capacity = replace(
            ready[0].capacity, num_blocks=min(r.capacity.num_blocks for r in ready)
        )
        self._plan = ready[0].plan
        self.cuda_graphs = all(r.cuda_graphs for r in ready)
        self._pids = [r.pid for r in ready]

    def _start(self, spec: WorkerSpec, timeout_s: float) -> list[RankReady]:
        deadline = time.monotonic() + timeout_s
        address = self._gather([self._actors[0].rendezvous_address.remote()], deadline, "start")[0]
        refs = [
            a.start.remote(
                spec, rank, self.world_size, address, timeout_s, env("SARATHI_RANK_PROFILE")
            )
            for rank, a in enumerate(self._actors)
        ]
        return self._gather(refs, deadline, "start")

    # -- the executor interface ------------------------------------------------------------
    def capacity(self) -> CacheCapacity:
        return self._capacity

    def cache_plan(self) -> CachePlan:
        return self._plan

    def launch(self, step: StepInput) -> StepHandle:
        if self._error is not None:
            raise type(self._error)(
                f"the executor is unusable after an earlier failure: {self._error}"
            )
        payload = encode_step(step)
        return _Calls([a.step.remote(payload) for a in self._actors])

    def sample(self, handle: StepHandle, masks: TokenMasks | None) -> None:
        # The engine defers sampling only on executors that overlap; here every step's
        # masks travel in its StepInput.
        raise NotImplementedError("this executor takes grammar masks in the StepInput")

    def collect(self, handle: StepHandle) -> StepResult:
        assert isinstance(handle, _Calls)
        reply: StepReply = self._gather(
            handle.refs, time.monotonic() + self.step_timeout, "a step"
        )[0]
        self._stats = reply.cache_stats
        return reply.result

    def cache_stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def is_alive(self) -> bool:
        """False once an actor died or a step failed; non-blocking (for /health)."""
        if self._error is not None:
            return False
        done, _ = self._ray.wait(self._watch, num_returns=1, timeout=0)
        return not done

    def worker_pids(self) -> list[int]:
        return list(self._pids)

    def shutdown(self) -> None:
        if self._error is None:
            refs = [a.shutdown.remote() for a in self._actors]
            self._ray.wait(refs, num_returns=len(refs), timeout=10.0)
        self._kill_all()

    # -- waiting on the actors -------------------------------------------------------------
    def _gather(self, refs: list[Any], deadline: float, what: str) -> list[Any]:
        """Results of ``refs`` in order; the first failure (or the deadline) fails the
        executor. Calls are awaited as they finish, so a dead rank is noticed even while
        rank 0 still waits in a collective for it."""
        from ray.exceptions import RayActorError, RayTaskError

        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            remaining = deadline - time.monotonic()
            done, pending = self._ray.wait(pending, num_returns=1, timeout=max(0.0, remaining))
            if not done:
                ranks = sorted(index[r] for r in pending)
                self._fail(
                    WorkerDiedError(
                        f"Ray actor(s) of rank(s) {ranks} did not finish {what} in time; they "
                        "are assumed hung or unschedulable (cluster resources: "
                        f"{self._ray.available_resources()})"
                    )
                )
            for ref in done:
                try:
                    results[index[ref]] = self._ray.get(ref)
                except RayActorError as e:
                    self._fail(
                        WorkerDiedError(
                            f"the Ray actor of tensor-parallel rank "
                            f"{index[ref]} died during {what}: {e}"
                        )
                    )
                except RayTaskError as e:
                    self._blame_dead_actor(pending, index, what)
                    self._fail(task_error(index[ref], what, e))
        return results

    def _blame_dead_actor(self, pending: list[Any], index: dict[Any, int], what: str) -> None:
        """A rank whose peer died fails in its collective, possibly before the peer's death
        is reported: give the others a moment, and name a dead one if there is one."""
        from ray.exceptions import RayActorError

        if not pending:
            return
        done, _ = self._ray.wait(pending, num_returns=len(pending), timeout=_BLAME_GRACE_S)
        for ref in done:
            try:
                self._ray.get(ref)
            except RayActorError as e:
                self._fail(
                    WorkerDiedError(
                        f"the Ray actor of tensor-parallel rank "
                        f"{index[ref]} died during {what}: {e}"
                    )
                )
            except Exception:  # other ranks' own failures: not the cause
                continue

    def _fail(self, error: WorkerError) -> None:
        self._error = error
        self._kill_all()
        raise error

    def _kill_all(self) -> None:
        for a in self._actors:
            self._ray.kill(a, no_restart=True)


def task_error(rank: int, what: str, e: Exception) -> WorkerError:
    """The driver's error for a rank whose call raised (a RayTaskError, whose ``str`` holds
    the remote traceback): see ``rank_failure``."""
    cause = getattr(e, "cause", None) or e
    summary = f"tensor-parallel rank {rank} failed during {what}: {type(cause).__name__}: {cause}"
    return rank_failure(summary, str(e))
