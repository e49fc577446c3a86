"""POST /v1/responses: OpenAI's Responses API over the chat path.

A request becomes a chat request (``chat_request``) and is prepared as chat's are
(``prepare_chat``: tools, output constraints, the chat template, sampling parameters). Its
output is read as chat's is (tools.py) and told as output items (responses_output.py) in
the order the model wrote them: a ``message`` (one ``output_text`` part) per run of text
between calls, and a ``function_call`` item per call. Streamed or not, the items are the
same, in that order.

Streamed, the events are the Responses API's, numbered by ``sequence_number``:
``response.created``, ``response.in_progress``, then for each output item
``response.output_item.added`` ... ``response.output_item.done`` (a message's text in
``response.output_text.delta`` events between ``response.content_part.added`` and
``.done``; a call's arguments in ``response.function_call_arguments.delta`` events and
``.done``), one item after another, and last ``response.completed`` or
``response.incomplete`` with the response as the non-streamed route returns it. An engine
failure is an ``error`` event followed by ``response.failed``. As OpenAI's, the stream ends
without ``[DONE]``.

A response is stored when it ends unless the request says ``store: false`` (and where the
server has a response store: stored_responses.py); streamed, the entry is made before the
last event is sent, so a client that reads it finds the response stored. A stream whose
client leaves before its end is not stored. A background response (``background: true``)
is stored as queued and answered at once; its work runs as a task of the server's
(background_responses.py) and stores how it ended, cancelled included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from sarathi.entrypoints.openai_server.errors import APIError, bad_request, validation_message
from sarathi.entrypoints.openai_server.field_audit import (
    RESPONSES_ACCEPTED,
    RESPONSES_UNSUPPORTED,
    audit,
)
from sarathi.entrypoints.openai_server.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    SamplingFields,
    Tool,
    ToolCallRequest,
    ToolChoice,
    checked_body,
)
from sarathi.entrypoints.openai_server.protocol_responses import (
    FunctionCallInput,
    FunctionToolChoice,
    IncompleteDetails,
    InputMessage,
    InputTokensDetails,
    OutputItem,
    OutputTokensDetails,
    ReasoningInput,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    TextConfig,
)
from sarathi.entrypoints.openai_server.responding import (
    ClientDisconnected,
    Origin,
    SSEResponse,
    engine_stream,
    final_output,
    origin_of,
    unless_disconnected,
)
from sarathi.entrypoints.openai_server.responses_output import (
    StreamEvents,
    failure,
    output_items,
)
from sarathi.entrypoints.openai_server.serving_chat import PreparedChat, new_tokens, prepare_chat
from sarathi.entrypoints.openai_server.serving_common import (
    ENGINE_ERRORS,
    ServerState,
    engine_error,
    stream_failure,
)
from sarathi.entrypoints.openai_server.stored_responses import STORE_FLAGS, Keeping, keeping

logger = logging.getLogger("sarathi.server")

# The chat fields a response's request names otherwise, for the 400s of prepare_chat.
_NAMES = {
    "messages": "input",
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
}


async def create_response(state: ServerState, req: ResponsesRequest, raw: Request) -> Response:
    state.check_model(req.model)
    audit(req, state.warned_fields, RESPONSES_UNSUPPORTED, RESPONSES_ACCEPTED)
    state.check_priority(req.priority)
    origin = origin_of(raw, req.priority, req.cache_salt)
    state.check_admission(origin)  # before the prompt's tokenization, which a burst queues for
    _refuse_chat_only_fields(req)
    response_id = _response_id(state, req)
    keep = await keeping(state.responses, req)  # with previous_response_id: the history
    if req.background:
        _check_background(req, keep)
    prepared = await prepare_chat(state, chat_request(req), _NAMES)
    base = _in_progress(state, req, prepared, keep.stored, response_id)
    state.admit(1, origin)
    if req.background:
        return await _start_background(state, prepared, base, keep, origin)
    if req.stream:
        return SSEResponse(
            _stream(state, prepared, base, keep, origin),
            on_close=lambda: state.release(1, origin),
        )
    try:
        return await unless_disconnected(raw, _full(state, prepared, base, keep, origin))
    except ClientDisconnected:
        return Response(status_code=499)
    finally:
        state.release(1, origin)


# A response's id is a path segment of GET /v1/responses/{id}: a caller's must read the same
# there, unescaped.
_ID_CHARS = re.compile(r"[A-Za-z0-9._:~-]+")


def _response_id(state: ServerState, req: ResponsesRequest) -> str:
    """The response's id: the body's ``request_id`` where it has one (vLLM's: the caller's
    id is the response's), else a new ``resp_`` id. A caller's id must not name a stored
    response: it would replace another's."""
    own = req.request_id
    if own is None:
        return f"resp_{uuid.uuid4().hex}"
    if not _ID_CHARS.fullmatch(own):
        raise bad_request(
            "request_id names the response, whose id is a URL path segment: use letters, "
            "digits and . _ : ~ - only",
            "request_id",
        )
    if own in state.responses:
        raise bad_request(
            f"request_id {own!r} is a stored response's id already: send another id",
            "request_id",
        )
    return own


def _check_background(req: ResponsesRequest, keep: Keeping) -> None:
    """A background response is read back from the store: it needs one, and storing."""
    if req.store is False:
        raise bad_request(
            "a background response is stored: send store true, or leave it out", "store"
        )
    if not keep.stored:
        raise bad_request(
            f"background responses need the response store, and it is off: start the server "
            f"with {STORE_FLAGS} above 0",
            "background",
        )
    if req.stream:
        raise bad_request(
            "a streamed background response is not supported (its events cannot be "
            "replayed here): poll GET /v1/responses/{id}, or stream without background",
            "stream",
        )


def _refuse_chat_only_fields(req: ResponsesRequest) -> None:
    """Fields the request inherits from the chat route's sampling fields that mean nothing
    in a response, and the stream options it cannot honour (any, unstreamed)."""
    if req.n != 1:
        raise bad_request("a response has one output; n must be 1", "n")
    if req.response_format is not None:
        raise bad_request(
            "response_format is a field of /v1/chat/completions; a response takes text.format",
            "response_format",
        )
    if req.prompt_logprobs is not None:
        raise bad_request("prompt_logprobs are not supported on /v1/responses", "prompt_logprobs")
    options = req.stream_options
    if options is not None and not req.stream:
        # As on chat and completions: OpenAI's Responses API documents stream_options as
        # "only set this when you set stream: true", as its chat does (which answers 400).
        raise bad_request("stream_options is only taken with stream: true", "stream_options")
    if options is not None and options.continuous_usage_stats:
        raise bad_request(
            "continuous_usage_stats is not supported on /v1/responses (the usage comes with "
            "the final event)",
            "stream_options",
        )


# -- the request, as a chat request -------------------------------------------------------
def chat_request(req: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request that asks for what ``req`` asks."""
    # The fields the request set, as set: a default left out stays a default there (one
    # that tool calling may change: skip_special_tokens).
    sampling = {
        name: getattr(req, name)
        for name in SamplingFields.model_fields
        if name in req.model_fields_set
    }
    sampling["response_format"] = _response_format(req.text)
    tools = None
    if req.tools:
        tools = [
            Tool(
                type="function",
                function=FunctionDefinition(
                    name=t.name, description=t.description, parameters=t.parameters, strict=t.strict
                ),
            )
            for t in req.tools
        ]
    choice: ToolChoice | None = None
    if isinstance(req.tool_choice, FunctionToolChoice):
        name = NamedFunction(name=req.tool_choice.name)
        choice = NamedToolChoice(type="function", function=name)
    elif req.tool_choice != "auto" or tools:
        # "auto" with no tools is a response's default (echoed so; OpenAI and vLLM take it
        # asked for too), where chat's tool_choice without tools is a 400.
        choice = req.tool_choice
    body = dict(
        **sampling,
        messages=chat_messages(req),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls,
        max_tokens=req.max_output_tokens,
        add_special_tokens=req.add_special_tokens,
        chat_template_kwargs=req.chat_template_kwargs,
        reasoning_effort=req.reasoning.effort if req.reasoning is not None else None,
    )
    # Made of the request's parts, whose JSON was walked (lone surrogates, nesting) as it
    # was parsed: not walked again, on the event loop (a 4 MB guided_json took 0.9 s).
    checked_body.set((body, None))
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as e:  # all was checked above: a bound of chat's, if anything
        message, param = validation_message(e)
        raise bad_request(message, _NAMES.get(param or "", param) or "input") from e


def chat_messages(req: ResponsesRequest) -> list[ChatMessage]:
    """``instructions`` as a first system message, then the input items as chat messages: a
    function call joins the assistant message before it (or makes one), and a call's output
    is a ``tool`` message naming the call and its function."""
    messages = []
    if req.instructions is not None:
        messages.append(_message("system", req.instructions))
    items = (
        [InputMessage(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    )
    names: dict[str, str] = {}  # call id -> function name
    reasoning: list[str] = []  # reasoning items waiting for the assistant turn they precede
    for item in items:
        if isinstance(item, ReasoningInput):
            reasoning.append(item.text())
            continue
        if isinstance(item, InputMessage):
            messages.append(_message(item.role, item.text()))
        elif isinstance(item, FunctionCallInput):
            names[item.call_id] = item.name
            call = ToolCallRequest(
                id=item.call_id,
                type="function",
                function=FunctionCall(name=item.name, arguments=item.arguments),
            )
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                messages.append(_message("assistant", None, tool_calls=[call]))
        else:
            name = names.get(item.call_id)
            messages.append(_message("tool", item.text(), tool_call_id=item.call_id, name=name))
        last = messages[-1]
        if reasoning and last.role == "assistant":
            # The thinking of that turn, for templates that show it (as chat's ``reasoning``).
            last.reasoning = "\n".join([last.reasoning or "", *reasoning]).lstrip("\n")
        reasoning = []
    return messages


def _message(role: Any, content: str | None, **fields: Any) -> ChatMessage:
    return ChatMessage.model_validate({"role": role, "content": content, **fields})


def _response_format(text: TextConfig | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    return ResponseFormat.model_validate(
        {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.name or "response",
                "description": fmt.description,
                "schema": fmt.schema_,
                "strict": fmt.strict,
            },
        }
    )


# -- the response -------------------------------------------------------------------------
def _in_progress(
    state: ServerState,
    req: ResponsesRequest,
    prepared: PreparedChat,
    stored: bool,
    response_id: str,
) -> ResponseObject:
    """The response before its output: the request's settings as they took effect, and
    whether it will be stored."""
    fmt = req.text.format if req.text is not None else None
    text_format: dict[str, Any] = {"type": fmt.type if fmt is not None else "text"}
    if fmt is not None and fmt.type == "json_schema":
        text_format.update(
            name=fmt.name or "response",
            schema=fmt.schema_,
            description=fmt.description,
            strict=fmt.strict,
        )
    return ResponseObject(
        id=response_id,
        created_at=int(time.time()),
        status="in_progress",
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        model=state.model_name,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        background=bool(req.background),
        reasoning=req.reasoning.echo() if req.reasoning is not None else None,
        temperature=prepared.params.temperature,
        text={"format": text_format},
        tool_choice=_tool_choice(req.tool_choice),
        tools=[
            t.model_dump(include={"type", "name", "description", "parameters", "strict"})
            for t in req.tools or []
        ],
        top_p=prepared.params.top_p,
        user=req.user,
        metadata=req.metadata or {},
        store=stored,
        previous_response_id=req.previous_response_id,
        prompt_cache_key=req.prompt_cache_key,
        prompt_cache_retention=req.prompt_cache_retention,
        safety_identifier=req.safety_identifier,
    )


def _tool_choice(choice: str | FunctionToolChoice | None) -> str | dict[str, Any]:
    """The request's tool_choice as OpenAI echoes it: "auto" when not given, with tools or
    without."""
    if isinstance(choice, FunctionToolChoice):
        return {"type": "function", "name": choice.name}
    return choice or "auto"


def _finished(
    base: ResponseObject,
    output: list[OutputItem],
    finish_reason: str | None,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int = 0,
) -> ResponseObject:
    incomplete = finish_reason == "length"
    return base.model_copy(
        update={
            "status": "incomplete" if incomplete else "completed",
            "completed_at": None if incomplete else int(time.time()),
            "incomplete_details": IncompleteDetails() if incomplete else None,
            "output": list(output),
            "usage": ResponseUsage(
                input_tokens=input_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens),
                output_tokens=output_tokens,
                output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
                total_tokens=input_tokens + output_tokens,
            ),
        }
    )


async def _response(
    state: ServerState,
    prepared: PreparedChat,
    base: ResponseObject,
    origin: Origin,
) -> ResponseObject:
    """The finished response (raises what the engine raised)."""
    out = await final_output(state.engine, prepared.ids, prepared.params, base.id, origin)
    c = out.outputs[0]
    split = prepared.split(c)
    return _finished(
        base,
        output_items(prepared.mode, c, split),
        c.finish_reason,
        len(prepared.ids),
        len(c.token_ids),
        out.num_cached_tokens,
        split.reasoning_tokens if split is not None else 0,
    )


async def _full(
    state: ServerState,
    prepared: PreparedChat,
    base: ResponseObject,
    keep: Keeping,
    origin: Origin,
) -> Response:
    try:
        body = await _response(state, prepared, base, origin)
    except ENGINE_ERRORS as e:
        raise engine_error(e) from e
    _, content = await keep.finish(body)
    return Response(content, media_type="application/json")


# -- background ---------------------------------------------------------------------------
async def _start_background(
    state: ServerState,
    prepared: PreparedChat,
    base: ResponseObject,
    keep: Keeping,
    origin: Origin,
) -> Response:
    """Store the response as queued, start its work, and answer at once. The work holds
    the request admitted (``state.admit``) until it ends."""
    try:
        queued, content = await keep.finish(base.model_copy(update={"status": "queued"}))
        if not queued.store:  # larger than the whole store: it could never be read back
            raise bad_request("the request is too large for the response store", "background")
    except BaseException:
        state.release(1, origin)
        raise
    work = _in_background(state, prepared, base, keep, origin)
    state.background.start(base.id, work, on_done=lambda: state.release(1, origin))
    return Response(content, media_type="application/json")


async def _in_background(
    state: ServerState,
    prepared: PreparedChat,
    base: ResponseObject,
    keep: Keeping,
    origin: Origin,
) -> None:
    """A background response's work: its end stored as it ended, cancelled too (cancel
    aborts the engine request: ``generate`` aborts it as it is closed)."""
    keep.mark(base)  # in progress, as the engine takes it
    final: ResponseObject
    try:
        final = await _response(state, prepared, base, origin)
    except asyncio.CancelledError:
        # Ours to take: the task ends here, after recording how (cancel waits for it).
        final = base.model_copy(update={"status": "cancelled"})
    except ENGINE_ERRORS as e:
        final = failure(base, engine_error(e), [])
    except APIError as e:
        final = failure(base, e, [])
    except Exception:  # our bug: the response fails, the server goes on
        logger.exception("internal error in background response %s", base.id)
        final = failure(base, APIError("internal server error", 500, type="server_error"), [])
    # A cancel (or DELETE, or shutdown) that comes while the result is being stored waits
    # for the write: the task ends only once the store holds how it ended, so a DELETE that
    # waited for the task removes it for good (a write still under way in its thread would
    # otherwise store it again after the DELETE answered).
    storing = asyncio.ensure_future(keep.finish(final))
    while not storing.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(storing)
    storing.result()


# -- streaming ----------------------------------------------------------------------------
async def _stream(
    state: ServerState,
    prepared: PreparedChat,
    base: ResponseObject,
    keep: Keeping,
    origin: Origin,
) -> AsyncGenerator[str, None]:
    events = StreamEvents(prepared.mode)
    reasoner = prepared.reasoning_stream()
    yield events.response("response.created", base)
    yield events.response("response.in_progress", base)
    stream = engine_stream(state.engine, prepared.ids, prepared.params, base.id, origin)
    try:
        async with contextlib.aclosing(stream) as outputs:
            async for out in outputs:
                c = out.outputs[0]
                if reasoner is None:
                    told = events.feed(c.text_delta)
                else:
                    piece = reasoner.feed(c.text_delta, new_tokens(c), final=c.finished())
                    told = events.think(piece.reasoning)
                    if piece.answering:
                        told += events.feed(piece.content)
                for event in told:
                    yield event
                if not c.finished():
                    continue
                events.reasoning_cut = (
                    reasoner is not None and reasoner.thinking and c.finish_reason == "length"
                )
                for event in events.finish(c.finish_reason):
                    yield event
                final = _finished(
                    base,
                    events.items,
                    c.finish_reason,
                    len(prepared.ids),
                    c.num_output_tokens,
                    out.num_cached_tokens,
                    reasoner.reasoning_tokens if reasoner is not None else 0,
                )
                final, _ = await keep.finish(final)
                kind = (
                    "response.completed" if final.status == "completed" else "response.incomplete"
                )
                yield events.response(kind, final)
                break
    except ENGINE_ERRORS as e:
        error = engine_error(e)
    except APIError as e:
        error = e
    except Exception:  # our bug: response.failed, not a connection cut mid-body
        error = stream_failure("/v1/responses")
    else:
        return
    failed, _ = await keep.finish(events.failure(base, error))
    for event in events.failed(error, failed):
        yield event
