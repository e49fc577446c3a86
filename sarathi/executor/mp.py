"""The ``mp`` executor: one process per tensor-parallel rank on this host.

Every rank (rank 0 included) lives in its own spawned process, so the engine process never
sits inside a collective: it only waits on pipes and process sentinels, with a deadline,
and a rank that dies or hangs turns into a ``WorkerDiedError`` instead of a hang.

Per step the driver encodes the ``StepInput`` once (``step_codec``: flat arrays, no pickle)
and writes it into a shared-memory ring that every rank reads (``shm_ring``); only rank 0
answers, down its pipe. Non-zero ranks write to their pipe only to report a failure.

Steps overlap as with one in-process worker: the driver writes step N+1 before it has
step N's reply. Rank 0 broadcasts each step's sampled ids to the other ranks on the device,
so every rank fills N+1's placeholders itself; rank 0 answers from a second thread, so its
host work for N+1 runs while the device computes N.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from sarathi.core.scheduler import CacheCapacity
from sarathi.core.scheduler_output import StepInput, StepResult, TokenMasks
from sarathi.engine.model_setup import bind_thread_device
from sarathi.envs import env
from sarathi.executor import StepHandle
from sarathi.executor.errors import WorkerDiedError, WorkerError, rank_failure
from sarathi.executor.rank_worker import RankReady, RankWorker, StepReply, rank_device
from sarathi.executor.shm_ring import RingHandle, RingReader, RingWriter
from sarathi.executor.step_codec import encode_step
from sarathi.worker.cache_engine import CachePlan
from sarathi.worker.model_runner import InflightBatch
from sarathi.worker.worker import WorkerSpec

# How often an idle rank checks that the engine process is still there.
_PARENT_CHECK_S = 1.0
# How long a reported failure waits for a possibly dead peer to show (failure path only).
_BLAME_GRACE_S = 1.0
# Grace given to ranks to exit cleanly at shutdown before they are terminated.
_EXIT_GRACE_S = 10.0
# How often the driver, waiting for a free ring slot, checks that the ranks are alive.
_RANK_CHECK_S = 1.0

# The step ring: a decode step of 256 sequences takes ~6 KiB, a 1024-token chunk ~8 KiB more;
# longer messages (large grammar masks) stream through in pieces.
_RING_SLOTS = 4
_RING_SLOT_BYTES = 1 << 20

# Kinds of ring message: a step; the grammar masks of a step launched with masks_follow
# (same number); stop.
_STEP = 0
_STOP = 1
_SAMPLE = 2


def _rank_main(
    spec: WorkerSpec,
    rank: int,
    world_size: int,
    init_method: str,
    device: torch.device,
    timeout_s: float,
    ring: RingHandle,
    replies: Connection,
    profile_dir: str,
    cpu_threads: int,
) -> None:
    """Body of a rank process: start, report, then serve commands until told to stop.

    Steps are launched as they arrive. Rank 0 answers from a second thread, which waits
    for each step's tokens while this one already launches the next step: the driver
    sends step N+1 before it has step N's tokens, and the rank's host work for N+1 runs
    while the device computes N."""
    # Ctrl-C at a terminal reaches the whole foreground process group, ranks included. The
    # driver handles it (it abandons the step and stays usable, or shuts the ranks down);
    # a rank that died of it instead would fail the engine. The driver's exit still ends
    # the ranks: they watch for it, and it terminates them at exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send_lock = threading.Lock()

    def send(kind: str, body: Any) -> None:
        with send_lock:
            replies.send((kind, body))

    try:
        # Attached before "ready": the driver never removes the ring under a starting rank.
        commands = RingReader(ring, rank)
        worker = RankWorker(
            spec, rank, world_size, init_method, device, timeout_s, profile_dir, cpu_threads
        )
        send("ready", worker.ready())
    except Exception as e:  # reported to the driver, which raises it
        send("error", _report(f"rank {rank} failed to start", e))
        return
    parent = mp.parent_process()

    def engine_alive() -> bool:
        # Once the engine is gone nobody will ever send "stop".
        return parent is None or parent.is_alive()

    # The runner's state is touched by one thread at a time; waiting for a step's tokens
    # happens outside the lock.
    lock = threading.Lock()
    answers: queue.SimpleQueue[tuple[int, InflightBatch] | None] = queue.SimpleQueue()
    answerer = None
    if rank == 0:
        answerer = threading.Thread(
            target=_answer, args=(worker, lock, answers, send), name="sarathi-answer", daemon=True
        )
        answerer.start()
    # Steps launched with masks_follow, waiting for their masks, by step number.
    held: dict[int, InflightBatch] = {}
    try:
        while True:
            message = commands.read(engine_alive, _PARENT_CHECK_S)
            if message is None:
                return
            if message.kind == _STOP:
                answers.put(None)
                if answerer is not None:
                    answerer.join()
                worker.shutdown()
                return
            with lock:
                if message.kind == _STEP:
                    inflight = worker.launch(message.payload)
                    if inflight.unsampled is not None:
                        held[message.number] = inflight
                        continue
                else:  # _SAMPLE
                    waiting = held.pop(message.number, None)
                    if waiting is None:
                        continue  # the step had nothing to sample: already answered
                    inflight = worker.sample(waiting, message.payload)
            if answerer is not None:
                answers.put((message.number, inflight))
    except Exception as e:  # reported; peers may be stuck, the driver ends them
        send("error", _report(f"rank {rank} failed in a step", e))
    finally:
        answers.put(None)


def _answer(
    worker: RankWorker,
    lock: threading.Lock,
    answers: queue.SimpleQueue[tuple[int, InflightBatch] | None],
    send: Callable[[str, Any], None],
) -> None:
    """Rank 0's answering thread: each launched step's reply, in launch order."""
    bind_thread_device(worker.device)  # a new thread starts on the process's first GPU
    while (item := answers.get()) is not None:
        number, inflight = item
        try:
            worker.wait(inflight)
            with lock:
                reply = worker.reply(inflight)
        except Exception as e:  # reported; the driver ends the ranks
            send("error", _report("rank 0 failed collecting a step", e))
            return
        send("reply", (number, reply))


@dataclass
class _Queued(StepHandle):
    number: int


class MPExecutor:
    # Rank 0 broadcasts each step's sampled ids to the other ranks on the device, so every
    # rank resolves the next step's placeholders: step N+1 may be sent before N's reply.
    overlaps = True

    def __init__(self, spec: WorkerSpec) -> None:
        pc = spec.config.parallel
        self.world_size = pc.tensor_parallel_size
        self.step_timeout = pc.resolved_step_timeout
        self._error: WorkerError | None = None
        self._stats: dict[str, Any] = {}
        self._step_number = 0
        # Rank 0's replies that arrived before their step was collected, by step number.
        self._early: dict[int, StepReply] = {}
        # A file rendezvous needs no free port; the directory outlives the group's setup.
        self._rendezvous = tempfile.TemporaryDirectory(prefix="sarathi-tp-")
        init_method = "file://" + os.path.join(self._rendezvous.name, "store")
        ctx = _process_context(spec.device)
        self._ring = RingWriter(ctx, self.world_size, _RING_SLOTS, _RING_SLOT_BYTES)
        self._replies: list[Connection] = []
        self._procs: list[Any] = []
        for rank in range(self.world_size):
            recv_end, send_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_rank_main,
                name=f"sarathi-tp{rank}",
                daemon=True,
                args=(
                    spec,
                    rank,
                    self.world_size,
                    init_method,
                    rank_device(spec.device, rank),
                    pc.resolved_worker_start_timeout,
                    self._ring.handle,
                    send_end,
                    env("SARATHI_RANK_PROFILE"),
                    # On the CPU the ranks share this process's intra-op threads.
                    max(1, torch.get_num_threads() // self.world_size),
                ),
            )
            proc.start()
            send_end.close()  # our copy: when the rank dies its pipe reads EOF
            self._replies.append(recv_end)
            self._procs.append(proc)
        try:
            ready = self._await_ready(pc.resolved_worker_start_timeout)
        except BaseException:
            self._kill_all()
            raise
        self._capacity = replace(
            ready[0].capacity, num_blocks=min(r.capacity.num_blocks for r in ready)
        )
        self._plan = ready[0].plan
        self.cuda_graphs = all(r.cuda_graphs for r in ready)

    # -- the executor interface ------------------------------------------------------------
    def capacity(self) -> CacheCapacity:
        return self._capacity

    def cache_plan(self) -> CachePlan:
        return self._plan

    def launch(self, step: StepInput) -> StepHandle:
        """Write the step for every rank and return at once; ``collect`` waits for rank
        0's reply."""
        self._check_usable()
        payload = encode_step(step)
        self._step_number += 1
        self._write(_STEP, self._step_number, payload)
        return _Queued(self._step_number)

    def sample(self, handle: StepHandle, masks: TokenMasks | None) -> None:
        """Send the grammar masks of a step launched with ``masks_follow``."""
        assert isinstance(handle, _Queued)
        self._write(_SAMPLE, handle.number, encode_step(StepInput(token_masks=masks)))

    def collect(self, handle: StepHandle) -> StepResult:
        assert isinstance(handle, _Queued)
        reply = self._await_step(handle.number)
        self._stats = reply.cache_stats
        return reply.result

    def cache_stats(self) -> dict[str, Any]:
        """Rank 0's cache after the latest step (every rank's cache is alike)."""
        return dict(self._stats)

    def is_alive(self) -> bool:
        """False once a rank has died or failed; cheap and non-blocking (for /health)."""
        return self._error is None and all(p.is_alive() for p in self._procs)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def shutdown(self) -> None:
        if self._error is None:
            # A rank that cannot take "stop" in time is terminated below like a slow one.
            with contextlib.suppress(TimeoutError):
                self._ring.write(
                    _STOP, 0, b"", time.monotonic() + _EXIT_GRACE_S, lambda: None, _EXIT_GRACE_S
                )
        deadline = time.monotonic() + _EXIT_GRACE_S
        for p in self._procs:
            p.join(max(0.0, deadline - time.monotonic()))
        self._kill_all()
        self._rendezvous.cleanup()

    # -- talking to the ranks -------------------------------------------------------------
    def _write(self, kind: int, number: int, payload: bytes) -> None:
        try:
            self._ring.write(
                kind,
                number,
                payload,
                time.monotonic() + self.step_timeout,
                # Replies read while checking belong to earlier steps: kept for collect.
                lambda: self._keep_replies(self._take_messages(0.0, "a step")),
                _RANK_CHECK_S,
            )
        except TimeoutError:
            self._fail(
                WorkerDiedError(
                    f"tensor-parallel ranks did not take a step within {self.step_timeout:.0f} s "
                    "and are assumed hung (raise --step-timeout if this is legitimately slow)"
                )
            )

    def _keep_replies(self, messages: list[tuple[int, str, Any]]) -> None:
        for rank, kind, body in messages:
            if rank == 0 and kind == "reply":
                self._early[body[0]] = body[1]

    # -- waiting on the ranks --------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._error is not None:
            raise type(self._error)(
                f"the executor is unusable after an earlier failure: {self._error}"
            )

    def _await_ready(self, timeout_s: float) -> list[RankReady]:
        ready: dict[int, RankReady] = {}
        deadline = time.monotonic() + timeout_s
        while len(ready) < self.world_size:
            waiting = sorted(set(range(self.world_size)) - set(ready))
            for rank, kind, body in self._wait_messages(deadline, timeout_s, "start", waiting):
                if kind == "ready":
                    ready[rank] = body
        return [ready[r] for r in range(self.world_size)]

    def _await_step(self, number: int) -> StepReply:
        # A reply to an older step is one whose wait was interrupted (Ctrl-C): the engine
        # never used that step, and re-sends its work, so it is dropped.
        for old in [n for n in self._early if n < number]:
            del self._early[old]
        deadline = time.monotonic() + self.step_timeout
        while number not in self._early:
            messages = self._wait_messages(deadline, self.step_timeout, "a step", [0])
            self._keep_replies(messages)
        return self._early.pop(number)

    def _wait_messages(
        self, deadline: float, limit: float, what: str, waiting: list[int]
    ) -> list[tuple[int, str, Any]]:
        """(rank, kind, body) of the messages that arrived; fails the executor if a rank
        died, reported an error, or ``deadline`` passed.

        Every rank's pipe and process sentinel are watched, not only the ranks waited for:
        a non-zero rank that dies leaves rank 0 blocked in a collective, silent.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._fail(
                WorkerDiedError(
                    f"tensor-parallel rank(s) {waiting} did not finish {what} within {limit:.0f} s "
                    "and are assumed hung (raise --step-timeout or --worker-start-timeout if this "
                    "is legitimately slow)"
                )
            )
        return self._take_messages(remaining, what)

    def _take_messages(self, timeout: float, what: str) -> list[tuple[int, str, Any]]:
        """The messages that arrive within ``timeout``; fails the executor if a rank died
        or reported an error."""
        ready = wait(self._replies + [p.sentinel for p in self._procs], timeout)
        messages: list[tuple[int, str, Any]] = []
        for rank, conn in enumerate(self._replies):
            if conn in ready:
                # On EOF the rank exited: reported below from its exit code.
                with contextlib.suppress(EOFError, OSError):
                    messages.append((rank, *conn.recv()))
        reported = {rank for rank, kind, _ in messages if kind == "error"}
        if reported:
            # A rank whose peer died fails in its collective, possibly a moment before the
            # peer's exit is visible: wait briefly so the dead one is named, not the witness.
            others = [p.sentinel for r, p in enumerate(self._procs) if r not in reported]
            if others:
                wait(others, _BLAME_GRACE_S)
        # A rank that exited may have sent more before it did (rank 0: replies, then its
        # error), and one select reads one message a pipe: read the rest, so a rank that
        # reported its failure and returned is not taken for one that vanished.
        for rank, p in enumerate(self._procs):
            if p.exitcode is not None:
                messages += [(rank, *m) for m in _drain(self._replies[rank])]
        reported = {rank for rank, kind, _ in messages if kind == "error"}
        # A rank that vanished without a word explains its peers' errors (a collective
        # whose peer is gone fails), so it is named first.
        for rank, p in enumerate(self._procs):
            if p.exitcode is not None and rank not in reported:
                self._fail(
                    WorkerDiedError(
                        f"tensor-parallel rank {rank} (pid {p.pid}) died with exit code "
                        f"{p.exitcode}{_signal_note(p.exitcode)} during {what}"
                    )
                )
        for _rank, kind, body in messages:
            if kind == "error":
                self._fail(rank_failure(*body))
        return messages

    def _fail(self, error: WorkerError) -> None:
        self._error = error
        self._kill_all()
        raise error

    def _kill_all(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        # Every rank is gone: nobody reads the ring any more.
        self._ring.close()


def _process_context(device: torch.device) -> Any:
    """Never fork: the engine process has threads, and CUDA cannot be used in a forked child.

    On a GPU, spawn: each rank starts from a clean interpreter, the one way that is safe
    whatever the parent has done with CUDA. On the host, a forkserver (one per engine
    process) imports torch and the worker code once, so ranks start in milliseconds rather
    than seconds; torch._dynamo is what meta-device initialisation imports lazily (~2 s).
    """
    if device.type == "cuda":
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["sarathi.executor.rank_worker", "torch._dynamo"])
    return ctx


def _report(what: str, e: BaseException) -> tuple[str, str]:
    """A rank's failure report, sent to the driver: the arguments of ``rank_failure``."""
    return f"{what}: {type(e).__name__}: {e}", traceback.format_exc()


def _drain(conn: Connection) -> list[tuple[str, Any]]:
    """Every message left in the pipe of a rank that has exited (its end is closed, so
    this never blocks)."""
    messages = []
    with contextlib.suppress(EOFError, OSError):
        while conn.poll():
            messages.append(conn.recv())
    return messages


def _signal_note(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f" (killed by {signal.Signals(-exitcode).name})"
        except ValueError:
            return f" (killed by signal {-exitcode})"
    return ""
