"""How a route answers: who sent a request (``Origin``); the engine's output for it, whole
(``final_output``), streamed (``engine_stream``) or as several requests' streams interleaved
(``merge``); work cancelled when its client goes away; large JSON bodies and streamed chunks
built off the event loop; server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sarathi.engine.async_engine import AsyncEngine
from sarathi.entrypoints.openai_server.auth import CLIENT_KEY_SCOPE
from sarathi.entrypoints.openai_server.protocol import PromptTokensDetails, UsageInfo
from sarathi.outputs import CompletionOutput, DeltaAccumulator, RequestOutput
from sarathi.sampling_params import SamplingParams

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Who sent a request and on what terms: what the engine queues and caches it by,
    apart from its prompt and sampling parameters (``AsyncEngine.generate``)."""

    client: str
    priority: int = 0
    cache_salt: str | None = None


def origin_of(raw: Request, priority: int = 0, cache_salt: str | None = None) -> Origin:
    """A request's ``Origin``. Its client is the API key it carries (named by its place in
    --api-key, never by its text), or without keys the caller's address: clients' requests
    take turns in the engine's queue and share the waiting room (``AsyncEngine.admit``)."""
    key = raw.scope.get(CLIENT_KEY_SCOPE)
    if key is not None:
        return Origin(f"key {key}", priority, cache_salt)
    host = raw.client.host if raw.client is not None else "unknown"
    return Origin(f"host {host}", priority, cache_salt)


def engine_stream(
    engine: AsyncEngine,
    prompt: list[int],
    params: SamplingParams,
    request_id: str,
    origin: Origin,
) -> AsyncGenerator[RequestOutput, None]:
    """The engine's delta snapshots of one request (``AsyncEngine.generate``)."""
    return engine.generate(
        prompt,
        params,
        request_id,
        origin.cache_salt,
        delta=True,
        priority=origin.priority,
        client=origin.client,
    )


async def final_output(
    engine: AsyncEngine,
    prompt: list[int],
    params: SamplingParams,
    request_id: str,
    origin: Origin,
) -> RequestOutput:
    """The whole finished output, added up from delta snapshots: they cost the engine what
    each step added, and still give the metrics their per-step timings."""
    whole = DeltaAccumulator()
    async for out in engine_stream(engine, prompt, params, request_id, origin):
        whole.add(out)
    # generate() ends only after a finished output or an error
    return whole.output()


async def json_off_loop(render: Callable[[], bytes]) -> Response:
    """A JSON response whose body ``render()`` makes, in a worker thread. A finished
    request's body grows with its outputs: n=128 choices with top_logprobs, or long prompts'
    prompt_logprobs, make tens of MB whose building took seconds of Python on the event
    loop, stalling every other stream and /health for as long."""
    return await asyncio.to_thread(lambda: Response(render(), media_type="application/json"))


def json_in_pieces(body: BaseModel, choices: Iterable[BaseModel]) -> bytes:
    """``body``'s JSON with ``choices`` as its choices, each serialized (then freed) as it is
    made, its other list fields an element at a time. A serializer call holds the GIL until
    it returns: over a whole 50 MB body (model_dump, then json.dumps) that was 7 s in which
    neither the event loop nor the engine thread ran, where an element takes milliseconds;
    and a body's million logprob objects, alive at once, made each collection of the
    garbage collector's older generations a pause of its own."""
    fields = []
    for name in type(body).model_fields:
        value = choices if name == "choices" else getattr(body, name)
        if isinstance(value, list) or name == "choices":
            piece = b"[" + b",".join(to_json(v) for v in value) + b"]"
        else:
            piece = to_json(value)
        fields.append(to_json(name) + b":" + piece)
    return b"{" + b",".join(fields) + b"}"


# A streamed chunk with more logprob entries than this (tokens times their alternatives)
# is built in a worker thread. A chunk carries every token its client has not taken yet (a
# slow reader's backlog: up to max_tokens of them, for each choice) or a prompt's
# prompt_logprobs; built on the event loop, 2,000 tokens with 20 alternatives each stalled
# every other client for over a second. A step's own chunk (a token or a few) costs less
# to build here than to hand to a thread.
STREAM_ENTRIES_ON_LOOP = 512


async def off_loop_if_large(build: Callable[[], T], entries: int) -> T:
    """``build()``, in a worker thread when it makes more than ``STREAM_ENTRIES_ON_LOOP``
    logprob entries. Awaiting the thread also lets a client's disconnect be seen between a
    backlog's chunks: without a pause, a stream whose client had gone built every chunk
    of its backlog (the send to a closed connection returns at once) before it stopped."""
    if entries <= STREAM_ENTRIES_ON_LOOP:
        return build()
    return await asyncio.to_thread(build)


class ClientDisconnected(Exception):
    """The HTTP client went away before its response was ready."""


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Any) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (aborting its requests)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task in done:
        return task.result()
    raise ClientDisconnected()


async def merge(
    streams: list[AsyncGenerator[RequestOutput, None]],
) -> AsyncGenerator[tuple[int, RequestOutput], None]:
    """Interleave several request streams as their outputs arrive: (stream index, output).

    Leaving the loop early cancels the producers, which aborts their requests.
    """
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as only:
            async for out in only:
                yield 0, out
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncGenerator[RequestOutput, None]) -> None:
        try:
            async with contextlib.aclosing(stream) as s:
                async for out in s:
                    queue.put_nowait((i, out))
        except Exception as e:
            # Any failure, the engine's or a bug: the reader raises it (a pump that died
            # silently would leave the reader waiting for it forever).
            queue.put_nowait((i, e))
        queue.put_nowait((i, done))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class StreamTally:
    """What a stream has reported so far: completion tokens, and which choices finished."""

    completion_tokens: int = 0
    finished: set[int] = field(default_factory=set)
    cached: dict[str, int] = field(default_factory=dict)  # request id -> cached prompt tokens
    # choice index -> its completion tokens so far: continuous usage reports the chunk's
    # choice's count, as vLLM does (previous_num_tokens[i]), not the request's total.
    choice_tokens: dict[int, int] = field(default_factory=dict)

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the prefix cache served, over the stream's requests."""
        return sum(self.cached.values())

    def reportable(
        self, out: RequestOutput, first_index: int, wants_logprobs: bool
    ) -> list[CompletionOutput]:
        """The choices of a streamed output that make a chunk: new text, new tokens whose
        logprobs the client asked for, or its finish (reported once per choice; a finished
        choice reappears in every later output of its request). Tokens whose text is held
        back (a partial character, a possible stop string) make no chunk of their own."""
        out_choices = []
        self.cached[out.request_id] = out.num_cached_tokens
        for c in out.outputs:
            self.completion_tokens += c.num_new_tokens
            index = first_index + c.index
            self.choice_tokens[index] = self.choice_tokens.get(index, 0) + c.num_new_tokens
            if index in self.finished:
                continue
            if c.finished():
                self.finished.add(index)
            elif not (c.text_delta or (c.num_new_tokens and wants_logprobs)):
                continue
            out_choices.append(c)
        return out_choices


def usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
) -> UsageInfo:
    """``cached_tokens``: report them (``--enable-prompt-tokens-details``); None: do not."""
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=(
            None if cached_tokens is None else PromptTokensDetails(cached_tokens=cached_tokens)
        ),
    )


def sse(payload: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event; ``event`` names its type (the Responses API's streams do)."""
    data = f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
    return data if event is None else f"event: {event}\n{data}"


SSE_DONE = "data: [DONE]\n\n"


class SSEResponse(StreamingResponse):
    """Server-sent events whose generator is always closed, so its requests are aborted
    the moment the client goes away (not whenever the garbage collector gets to it)."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[str, None], on_close: Callable[[], None]) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()
            self._on_close()
