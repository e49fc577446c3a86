"""The engine loop in a background thread, with one async stream of outputs per request.

``LLMEngine`` is not thread-safe and its ``step()`` blocks for a whole model forward, so it
lives in one thread of its own. Everything else (the HTTP handlers on the asyncio loop) talks
to it through a command queue that the loop thread drains between steps, and hears back
through per-request ``asyncio.Queue`` objects fed with ``loop.call_soon_threadsafe``.

    handler ──add/abort──▶ commands (Condition) ──▶ loop thread: engine.step() ─┐
       ▲                                                                       │
       └────────── asyncio.Queue per request ◀── call_soon_threadsafe ◀────────┘
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sarathi.engine.llm_engine import LLMEngine, RequestError
from sarathi.engine.model_setup import bind_thread_device
from sarathi.engine.request_log import RequestLog
from sarathi.outputs import RequestOutput, coalesce
from sarathi.sampling_params import SamplingParams

logger = logging.getLogger("sarathi")


class EngineDeadError(RuntimeError):
    """The engine loop stopped (a bug or a device failure); no request can be served."""


class EngineShuttingDown(RuntimeError):
    """The server is stopping; in-flight and new requests are ended."""


class EngineOverloaded(RuntimeError):
    """More requests wait for a slot than the server admits; the client should retry."""


class RequestFailed(RuntimeError):
    """The engine could not take this request (a bug its input set off); the engine runs on
    and serves the others."""


class StepObserver(Protocol):
    """Told about each step's outputs, on the loop thread (e.g. the Prometheus metrics)."""

    def on_add(self, params: SamplingParams) -> None:
        """The engine took a request with these parameters."""

    def on_step(self, num_tokens: int) -> None:
        """A step ran ``num_tokens`` tokens (prompt chunks and decodes) through the model."""

    def on_outputs(self, outputs: list[RequestOutput], now: float) -> None: ...

    def on_abort(self, request_id: str) -> None: ...


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    delta: bool = False  # its request's outputs are deltas (made for each output alone)


@dataclass
class _Add:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams
    arrival_time: float
    stream: _Stream
    cache_salt: str | None = None
    delta: bool = False
    priority: int = 0
    client: str | None = None


@dataclass
class _Abort:
    request_id: str


@dataclass
class _AbortAll:
    error: BaseException


@dataclass
class _ResetPrefixCache:
    stream: _Stream


class AsyncEngine:
    """Serve many concurrent callers from one ``LLMEngine``.

    ``generate()`` is the caller's side: an async iterator of ``RequestOutput`` snapshots.
    Leaving the iteration early (client gone, task cancelled) aborts the request, which frees
    its KV slot at the loop thread's next turn.
    """

    def __init__(self, engine: LLMEngine, request_log: RequestLog | None = None) -> None:
        """``request_log``: a line per request taken and (``RequestLog.outputs``) finished,
        the server's --enable-log-requests (None: no such lines)."""
        self.engine = engine
        self.request_log = request_log
        self._observers: list[StepObserver] = []
        self._death_callbacks: list[Callable[[BaseException], None]] = []
        self._cond = threading.Condition()
        self._commands: deque[_Add | _Abort | _AbortAll | _ResetPrefixCache] = deque()
        self._stop = False
        self._closing: BaseException | None = None  # once set, new requests are refused
        # Requests admitted by the server and not yet done, in all and by client; only the
        # event loop changes them.
        self.num_admitted = 0
        self._admitted_by: Counter[str | None] = Counter()
        self._error: BaseException | None = None
        self._idle = threading.Event()  # set while the loop thread waits with nothing to do
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        # Only the loop thread reads or writes this map.
        self._streams: dict[str, _Stream] = {}
        self.snapshot = self.engine.snapshot()

    # -- lifecycle -------------------------------------------------------------------------
    def add_observer(self, observer: StepObserver) -> None:
        """Register before ``start()``: observers run on the loop thread."""
        if self._thread is not None:
            raise RuntimeError("add observers before the engine loop starts")
        self._observers.append(observer)

    def on_death(self, callback: Callable[[BaseException], None]) -> None:
        """Have ``callback(error)`` called if the loop dies, on the loop thread (so it must be
        thread-safe), once every stream has been handed the error."""
        self._death_callbacks.append(callback)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sarathi-engine", daemon=True)
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        # The executor check is a non-blocking liveness probe of the workers (safe from any
        # thread); it catches a worker that died while the engine was idle.
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._error is None
            and self.engine.is_alive()
        )

    @property
    def error(self) -> BaseException | None:
        return self._error

    def stop_accepting(self, reason: str = "the server is shutting down") -> None:
        """Refuse new requests; those in flight run on (a graceful shutdown's first half)."""
        with self._cond:
            if self._closing is None:
                self._closing = EngineShuttingDown(reason)

    def admit(self, num_requests: int, max_waiting: int, client: str | None = None) -> None:
        """Count ``num_requests`` more in for ``client`` (the engine's requests: one per
        sample, each takes a slot of its own), or raise ``EngineOverloaded`` if
        ``max_waiting`` of them already wait beyond the slots (0: no bound), and the usual
        errors if the engine is stopping or dead. Call it on the event loop, before any
        await, and ``release`` the same number once the requests are done.

        A full queue still takes a client with nothing in flight while another client holds
        more than half of the requests in flight, so that one client's flood cannot lock
        the others out (the queue's turns then serve them soon); the clients so taken hold
        fewer than that client, and the queue never passes twice the bound. A request of
        several samples is refused only once the queue is full, never for its own size: it
        may leave up to its samples beyond the bound, and a large ``n`` is not starved by a
        queue that never empties below the bound."""
        self.check_admission(max_waiting, client)
        self.num_admitted += num_requests
        self._admitted_by[client] += num_requests

    def check_admission(self, max_waiting: int, client: str | None = None) -> None:
        """Raise what ``admit`` would raise now, counting nothing in: a request about to be
        refused is refused before its prompt is tokenized or its grammar compiled."""
        self._refuse_if_stopping()
        # Beyond the slots, a request waits: counted against the fixed number of slots, not
        # the last step's count, so a burst into free slots is never refused.
        waiting = max(0, self.num_admitted - self.engine.scheduler.max_running)
        if (
            max_waiting
            and waiting >= max_waiting
            and (waiting >= 2 * max_waiting or not self._locked_out(client))
        ):
            raise EngineOverloaded(
                f"{waiting} requests are already waiting for a slot (the bound is "
                f"{max_waiting}); retry shortly"
            )

    def _locked_out(self, client: str | None) -> bool:
        """Whether ``client`` has nothing in flight and another holds most of it."""
        if client in self._admitted_by:
            return False
        return 2 * max(self._admitted_by.values(), default=0) > self.num_admitted

    def release(self, num_requests: int, client: str | None = None) -> None:
        self.num_admitted -= num_requests
        left = self._admitted_by.pop(client, 0) - num_requests
        if left > 0:
            self._admitted_by[client] = left

    def begin_shutdown(self, reason: str = "the server is shutting down") -> None:
        """Refuse new requests and end every in-flight stream with an error (thread-safe)."""
        error = EngineShuttingDown(reason)
        with self._cond:
            if self._closing is None:
                self._closing = error
            self._commands.append(_AbortAll(error))
            self._cond.notify()

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop the loop thread (after ending all streams) and release the engine."""
        self.begin_shutdown()
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            self.engine.shutdown()
        except Exception:
            if self._error is None:
                raise
            # A device error poisons the CUDA context, so releasing its memory fails too;
            # the failure that matters was reported when the loop stopped.
            logger.warning("the failed engine could not release everything", exc_info=True)

    # -- the caller's side -----------------------------------------------------------------
    def new_request_id(self, prefix: str = "req") -> str:
        return f"{prefix}-{next(self._ids)}"

    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        cache_salt: str | None = None,
        delta: bool = False,
        priority: int = 0,
        client: str | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Snapshots of one request until it finishes (``cache_salt``, ``delta``, ``priority``,
        ``client``: see
        ``LLMEngine.add_request``; with ``delta`` each snapshot, the finished one too, holds
        only what was added since the previous one, so a step's snapshots cost what the step
        added, not the outputs' length: a reader that wants the whole output adds them up,
        see ``sarathi.outputs.DeltaAccumulator``). Snapshots that arrived since the caller
        last asked come as one (``sarathi.outputs.coalesce``): its ``text_delta``,
        ``num_new_tokens`` and, with ``delta``, its text, tokens and logprobs cover all of
        them.

        Raises ``RequestError`` if the engine refuses the request, ``EngineDeadError`` if the
        loop died and ``EngineShuttingDown`` when the server stops mid-request.
        """
        request_id = request_id or self.new_request_id()
        _, delta = params.output_modes(False, delta)
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue(), delta)
        log, outputs = self.request_log, None
        if log is not None:
            tokenizer = self.engine.tokenizer
            text = None
            if isinstance(prompt, list) and tokenizer is not None:
                text = await asyncio.to_thread(log.prompt_text, tokenizer, prompt)
            log.received(request_id, prompt, params, text)
            outputs = log.outputs_of(delta)
        self._submit(
            _Add(
                request_id,
                prompt,
                params,
                time.monotonic(),
                stream,
                cache_salt,
                delta,
                priority,
                client,
            )
        )
        finished = False
        held: BaseException | None = None  # an error found while coalescing, raised next
        try:
            while True:
                item = held if held is not None else await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                # Outputs that queued while the reader was busy become one: a reader that
                # falls behind the engine (a busy event loop, a slow client) then does one
                # chunk's work per request, not one per step it missed.
                while not item.finished and not stream.queue.empty():
                    later = stream.queue.get_nowait()
                    if isinstance(later, BaseException):
                        held = later
                        break
                    item = coalesce(item, later, delta)
                finished = item.finished
                if outputs is not None:
                    outputs.add(item)
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)

    async def reset_prefix_cache(self) -> int:
        """``LLMEngine.reset_prefix_cache`` on the loop thread; returns the blocks dropped."""
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._submit(_ResetPrefixCache(stream))
        result = await stream.queue.get()
        if isinstance(result, BaseException):
            raise result
        return int(result)

    def abort(self, request_id: str) -> None:
        with self._cond:
            self._idle.clear()
            self._commands.append(_Abort(request_id))
            self._cond.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the loop has applied every command and has no work (slots freed)."""
        return self._idle.wait(timeout)

    def _refuse_if_stopping(self) -> None:
        """Raise if the engine is dead or shutting down: the loop may then be gone, and a
        command queued now never answered."""
        if self._error is not None:
            raise EngineDeadError(f"the engine loop has stopped: {self._error}")
        if self._closing is not None:
            raise self._closing

    def _submit(self, cmd: _Add | _ResetPrefixCache) -> None:
        with self._cond:
            self._refuse_if_stopping()
            self._idle.clear()
            self._commands.append(cmd)
            self._cond.notify()

    # -- the loop thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            bind_thread_device(self.engine.setup.device)
            while True:
                with self._cond:
                    while not (self._commands or self._stop or self._has_work()):
                        self._idle.set()
                        self._cond.wait()
                    self._idle.clear()
                    commands, self._commands = self._commands, deque()
                    stop = self._stop
                self._apply(commands)
                if stop:
                    self._drain_aborts()
                    return
                stepped = self._has_work()
                if stepped:
                    self._dispatch(self.engine.step())
                if stepped or commands:  # an abort of the last request frees its slot at once
                    self.snapshot = self.engine.snapshot()
        except Exception as e:  # any failure of the step loop ends every stream
            logger.exception("the engine loop failed")
            self._fail(e)

    def _has_work(self) -> bool:
        return self.engine.has_unfinished_requests() or self.engine.scheduler.has_work()

    def _apply(self, commands: deque) -> None:
        for cmd in commands:
            if isinstance(cmd, _Add):
                self._add(cmd)
            elif isinstance(cmd, _Abort):
                if self._streams.pop(cmd.request_id, None) is not None:
                    self._abort(cmd.request_id)
            elif isinstance(cmd, _ResetPrefixCache):
                _deliver([(cmd.stream, self.engine.reset_prefix_cache())])
            else:
                streams, self._streams = self._streams, {}
                for rid in streams:
                    self._abort(rid)
                _deliver([(stream, cmd.error) for stream in streams.values()])

    def _abort(self, request_id: str) -> None:
        self.engine.abort_request(request_id)
        for observer in self._observers:
            observer.on_abort(request_id)

    def _add(self, cmd: _Add) -> None:
        if self._closing is not None:
            _deliver([(cmd.stream, self._closing)])
            return
        try:
            self.engine.add_request(
                cmd.prompt,
                cmd.params,
                request_id=cmd.request_id,
                arrival_time=cmd.arrival_time,
                cache_salt=cmd.cache_salt,
                delta=cmd.delta,
                priority=cmd.priority,
                client=cmd.client,
            )
        except RequestError as e:
            _deliver([(cmd.stream, e)])
            return
        except Exception as e:
            # Our bug, set off by this request's input before it ran (a step's failure is
            # the engine's and stops the loop): fail this one request, not every client's.
            logger.exception("request %s could not be added; the engine runs on", cmd.request_id)
            self.engine.abort_request(cmd.request_id)  # whatever part of it was added
            _deliver([(cmd.stream, RequestFailed(f"the engine could not take this request: {e}"))])
            return
        self._streams[cmd.request_id] = cmd.stream
        for observer in self._observers:
            observer.on_add(cmd.params)

    def _drain_aborts(self) -> None:
        """Free aborted sequences' slots before the engine is released."""
        while self.engine.scheduler.has_work() and not self.engine.has_unfinished_requests():
            self.engine.step()

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        now = time.monotonic()
        tokens = self.engine.last_step_tokens
        for observer in self._observers:
            if tokens:
                observer.on_step(tokens)
            observer.on_outputs(outputs, now)
        batch: list[tuple[_Stream, RequestOutput | RequestError]] = []
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue  # aborted since it was scheduled
            if out.finished:
                del self._streams[out.request_id]
                if out.error is not None:  # a choice failed mid-way (its output constraint)
                    batch.append((stream, RequestError(out.error, code="output_constraint_failed")))
                    continue
            batch.append((stream, out if stream.delta else _detach(out)))
        _deliver(batch)

    def _fail(self, error: BaseException) -> None:
        dead = EngineDeadError(f"the engine loop has stopped: {type(error).__name__}: {error}")
        with self._cond:
            self._error = error
            commands, self._commands = self._commands, deque()
        streams = list(self._streams.values())
        streams += [c.stream for c in commands if isinstance(c, _Add | _ResetPrefixCache)]
        self._streams = {}
        _deliver([(s, dead) for s in streams])
        for callback in self._death_callbacks:
            callback(error)


def _detach(out: RequestOutput) -> RequestOutput:
    """Copy what the engine keeps mutating (a cumulative request's logprobs lists) before
    another thread reads it (a delta request's are made for its output alone)."""
    if not any(c.logprobs is not None for c in out.outputs):
        return out
    outs = [
        replace(c, logprobs=list(c.logprobs)) if c.logprobs is not None else c for c in out.outputs
    ]
    return replace(out, outputs=outs)


def _deliver(items: list[tuple[_Stream, Any]]) -> None:
    """Hand items to their streams' event loops: one wake-up per loop, not per item."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Any]]] = {}
    for stream, item in items:
        by_loop.setdefault(stream.loop, []).append((stream.queue, item))
    for loop, pairs in by_loop.items():
        # Once per step: a try block costs nothing, contextlib.suppress() a context manager.
        try:  # noqa: SIM105
            loop.call_soon_threadsafe(_put_all, pairs)
        except RuntimeError:
            pass  # that event loop is closed: nobody is listening any more


def _put_all(pairs: list[tuple[asyncio.Queue, Any]]) -> None:
    for queue, item in pairs:
        queue.put_nowait(item)
