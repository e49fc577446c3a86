"""POST /v1/chat/completions: chat completions, streaming or not."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from sarathi.entrypoints.openai_server.chat_template import (
    chat_prompt_ids,
    request_template_kwargs,
)
from sarathi.entrypoints.openai_server.errors import APIError, bad_request, sse_error
from sarathi.entrypoints.openai_server.field_audit import audit
from sarathi.entrypoints.openai_server.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatResponseMessage,
    PromptLogprobs,
    StreamOptions,
    TokenizeChatRequest,
    TokenLogprob,
    TopLogprob,
)
from sarathi.entrypoints.openai_server.request_ids import response_id
from sarathi.entrypoints.openai_server.responding import (
    SSE_DONE,
    ClientDisconnected,
    Origin,
    SSEResponse,
    StreamTally,
    engine_stream,
    final_output,
    json_in_pieces,
    json_off_loop,
    merge,
    off_loop_if_large,
    origin_of,
    sse,
    unless_disconnected,
    usage,
)
from sarathi.entrypoints.openai_server.serving_common import (
    ENGINE_ERRORS,
    ServerState,
    engine_error,
    prompt_logprobs_body,
    prompt_logprobs_json,
    sampling_params,
    stream_failure,
    structured_outputs,
)
from sarathi.entrypoints.openai_server.tools import (
    ToolMode,
    ToolStream,
    template_tools,
    tool_constraint,
    tool_message,
    tool_mode,
)
from sarathi.outputs import CompletionOutput, Logprob, RequestOutput
from sarathi.reasoning import ReasoningParser, ReasoningStream, SplitOutput
from sarathi.sampling_params import SamplingParams


def _logprobs(
    state: ServerState,
    req: ChatCompletionRequest,
    c: CompletionOutput,
    start: int,
    end: int,
) -> ChatLogprobs:
    k = req.top_logprobs or 0
    as_id = state.names_ids(req.return_tokens_as_token_ids)

    def name(t: int) -> str:
        return state.token_name(t, as_id)

    def raw(t: int) -> list[int]:
        # Named by id, the name's bytes, as vLLM's: ``bytes`` are those of ``token``.
        return list(name(t).encode()) if as_id else state.token_bytes(t)

    content = []
    for pos in range(start, end):
        tid = c.token_ids[pos]
        entry = c.logprobs[pos] if c.logprobs is not None and pos < len(c.logprobs) else {}
        top = sorted(entry.items(), key=lambda kv: kv[1].rank)[:k]
        content.append(
            TokenLogprob(
                token=name(tid),
                logprob=entry[tid].logprob if tid in entry else float("-inf"),
                bytes=raw(tid),
                top_logprobs=[
                    TopLogprob(token=name(t), logprob=v.logprob, bytes=raw(t)) for t, v in top
                ],
            )
        )
    return ChatLogprobs(content=content)


def _role(state: ServerState, req: ChatCompletionRequest) -> str:
    """The reply's role, as vLLM's: --response-role for a new turn, the last message's role
    where the reply continues it (no generation prompt)."""
    return state.response_role if req.add_generation_prompt else req.messages[-1].role


def _prompt_logprobs(
    state: ServerState,
    req: ChatCompletionRequest,
    ids: list[int],
    entries: list[dict[int, Logprob] | None] | None,
) -> PromptLogprobs | None:
    """``entries``: the engine's prompt logprobs (a delta request's first output has them)."""
    if req.prompt_logprobs is None or entries is None:
        return None
    return prompt_logprobs_body(state, ids, entries, req.prompt_logprobs)


def _chunk_logprobs(
    state: ServerState,
    req: ChatCompletionRequest,
    ids: list[int],
    prompt_entries: list[dict[int, Logprob] | None] | None,
    c: CompletionOutput,
    with_prompt: bool,
) -> tuple[list | None, dict | None]:
    """A streamed chunk's prompt logprobs (with its first chunk) and its tokens' logprobs,
    as JSON values (None where not asked for)."""
    prompt_lp = None
    if with_prompt:
        body = _prompt_logprobs(state, req, ids, prompt_entries)
        prompt_lp = prompt_logprobs_json(body) if body is not None else None
    lp = None
    if req.logprobs:
        end = len(c.token_ids)
        lp = _logprobs(state, req, c, end - c.num_new_tokens, end).model_dump()
    return prompt_lp, lp


def _chunk_entries(
    req: ChatCompletionRequest, ids: list[int], c: CompletionOutput, with_prompt: bool
) -> int:
    """The logprob entries ``_chunk_logprobs`` makes: tokens times their alternatives."""
    entries = c.num_new_tokens * ((req.top_logprobs or 0) + 1) if req.logprobs else 0
    if with_prompt and req.prompt_logprobs is not None:
        entries += len(ids) * (req.prompt_logprobs + 1)
    return entries


def _echoed(req: ChatCompletionRequest) -> str:
    """What vLLM's ``echo`` puts before each reply: the last message's content when the reply
    continues that message (no generation prompt: an assistant prefill, or any last
    message), else nothing (a new assistant turn)."""
    if not req.echo:
        return ""
    last = req.messages[-1]
    new_turn = req.add_generation_prompt and not req.continue_final_message
    return last.text() if not new_turn or last.role == "assistant" else ""


@dataclass(frozen=True)
class PreparedChat:
    """A chat request made ready for the engine: its prompt, how it uses its tools, and its
    sampling parameters (with the output constraint of its format or tool choice)."""

    mode: ToolMode
    ids: list[int]
    params: SamplingParams
    # With --reasoning-parser: the parser, and whether the output begins in reasoning (the
    # prompt did not close it, and the template's switch did not turn thinking off).
    reasoning: ReasoningParser | None = None
    thinking: bool = False
    # The text of token ids, special tokens skipped: where the tags are special tokens the
    # request skips, it finds the answer's start in a whole output's text.
    decode: Callable[[Sequence[int]], str] | None = None

    def reasoning_stream(self) -> ReasoningStream | None:
        """A new split of one output (one per choice), or None without a parser."""
        if self.reasoning is None:
            return None
        tags = self.reasoning.tags
        return ReasoningStream(
            tags, self.thinking, tags_in_text=not (tags.special and self.params.skip_special_tokens)
        )

    def split(self, c: CompletionOutput) -> SplitOutput | None:
        """A finished output's reasoning and answer, or None without a parser."""
        stream = self.reasoning_stream()
        if stream is None:
            return None
        piece = stream.feed_whole(c.text, c.token_ids, self.decode)
        return SplitOutput(
            piece.reasoning if self.thinking else None,
            piece.content or None,
            stream.reasoning_tokens,
            piece.answering,
        )


def new_tokens(c: CompletionOutput) -> list[int]:
    """The token ids a delta output added (outputs of delta requests are deltas to the end)."""
    return c.token_ids


async def chat_prompt(
    state: ServerState, req: ChatCompletionRequest | TokenizeChatRequest
) -> tuple[list[int], dict[str, Any] | None]:
    """The prompt token ids of a chat request's messages, tools and documents, rendered in
    a worker thread, and the template variables they were rendered with; refused unread
    (400) when their text alone is longer than the context could hold, unless it is to be
    cut (truncate_prompt_tokens) or counted. /tokenize counts with it, so its count is the
    chat route's prompt, whatever its length (the body limit still bounds it)."""
    tools = template_tools(req)
    counted = isinstance(req, TokenizeChatRequest)
    truncated = isinstance(req, ChatCompletionRequest) and req.truncate_prompt_tokens is not None
    size = sum(len(m.text().encode("utf-8")) for m in req.messages) + len(
        json.dumps([tools or [], req.documents or []]).encode("utf-8")
    )
    if not (counted or truncated):
        state.check_prompt_bytes(size, "messages")
    kwargs = request_template_kwargs(
        state.tokenizer,
        state.chat_template,
        tools,
        req.reasoning_effort,
        {**state.default_template_kwargs, **(req.chat_template_kwargs or {})} or None,
    )
    ids = await state.off_loop(
        lambda: chat_prompt_ids(
            state.tokenizer,
            req.messages,
            state.chat_template,
            req.add_generation_prompt,
            req.continue_final_message,
            req.add_special_tokens,
            tools,
            kwargs,
            req.documents,
            state.content_format,
        ),
        long=size > state.max_prompt_bytes,
    )
    return ids, kwargs


async def prepare_chat(
    state: ServerState, req: ChatCompletionRequest, names: Mapping[str, str] | None = None
) -> PreparedChat:
    """Check a chat request and render its prompt (in a worker thread); a 400 names the field
    at fault. ``names`` renames fields for a route that takes them under other names
    (/v1/responses: ``input`` for ``messages``, ``text.format`` for ``response_format``)."""
    names = names or {}
    try:
        return await _prepare(state, req, names)
    except APIError as e:
        if e.param is not None:
            e.param = names.get(e.param, e.param)
        raise


async def _prepare(
    state: ServerState, req: ChatCompletionRequest, names: Mapping[str, str]
) -> PreparedChat:
    state.require_tokenizer("messages")
    mode = tool_mode(req, state.tool_parser)
    spec, spec_param = structured_outputs(req, names.get("response_format", "response_format"))
    special = await state.special_tokens(mode.tags, "tools")
    # In a worker thread: the tools' schemas are copied, and a strict tool's compiled.
    forced = await asyncio.get_running_loop().run_in_executor(
        state.grammar_threads, tool_constraint, req, mode, special
    )
    if forced is not None:
        if spec is not None:
            which = "with a strict tool " if mode.kind == "auto" else ""
            raise bad_request(
                f"tool_choice {mode.kind!r} {which}constrains the output itself; remove "
                f"{spec_param}" + (" or the tools' strict" if which else ""),
                spec_param,
            )
        spec, spec_param = forced, "tools"
    await state.check_structured(spec, spec_param)
    ids, template_kwargs = await chat_prompt(state, req)
    ids = state.truncate(ids, req.truncate_prompt_tokens)
    asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    # The route's own name for the messages: an overflow's message says "your input" there.
    max_tokens = state.check_prompt(
        ids, asked, names.get("messages", "messages"), names.get(param, param)
    )
    top = req.top_logprobs or 0
    params = sampling_params(
        req,
        max_tokens,
        top if req.logprobs else None,
        state.default_sampling,
        spec,
        req.prompt_logprobs,
    )
    reasoning = state.reasoning
    keeps_tags = reasoning is not None and reasoning.tags.special
    if (
        mode.keeps_special_tokens or keeps_tags
    ) and "skip_special_tokens" not in req.model_fields_set:
        # The request's default gives way (reasoning tags that are special tokens stay in
        # the text, where the parser finds them); a client that asks to skip them is obeyed.
        params.skip_special_tokens = False
    state.check_params(params)
    thinking = reasoning is not None and reasoning.thinking(ids, template_kwargs)
    decode = None
    if keeps_tags and params.skip_special_tokens:
        decode = functools.partial(state.tokenizer.decode, skip_special_tokens=True)
    return PreparedChat(mode, ids, params, reasoning, thinking, decode)


async def create_chat_completion(
    state: ServerState, req: ChatCompletionRequest, raw: Request
) -> Response:
    state.check_model(req.model)
    audit(req, state.warned_fields)
    state.check_priority(req.priority)
    origin = origin_of(raw, req.priority, req.cache_salt)
    state.check_admission(origin)  # before the prompt's tokenization, which a burst queues for
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    counts = {"top_logprobs": req.top_logprobs, "prompt_logprobs": req.prompt_logprobs}
    req = req.model_copy(update=state.check_logprobs(counts))
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options is only taken with stream: true", "stream_options")
    prepared = await prepare_chat(state, req)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"  # the engine's
    reply_id = response_id("chatcmpl", req.request_id, raw, request_id)
    created = int(time.time())
    n = req.n  # each sample takes a slot, and waits for one like a request
    state.admit(n, origin)
    if req.stream:
        return SSEResponse(
            _stream(state, req, prepared, request_id, reply_id, created, origin),
            on_close=lambda: state.release(n, origin),
        )
    try:
        return await unless_disconnected(
            raw, _full(state, req, prepared, request_id, reply_id, created, origin)
        )
    except ClientDisconnected:
        return Response(status_code=499)
    finally:
        state.release(n, origin)


async def _full(
    state: ServerState,
    req: ChatCompletionRequest,
    prepared: PreparedChat,
    request_id: str,
    reply_id: str,
    created: int,
    origin: Origin,
) -> Response:
    ids, params = prepared.ids, prepared.params
    try:
        out = await final_output(state.engine, ids, params, request_id, origin)
    except ENGINE_ERRORS as e:
        raise engine_error(e) from e
    return await json_off_loop(lambda: _full_body(state, req, prepared, reply_id, created, out))


def _full_body(
    state: ServerState,
    req: ChatCompletionRequest,
    prepared: PreparedChat,
    reply_id: str,
    created: int,
    out: RequestOutput,
) -> bytes:
    """The response to a finished request, as JSON (in a worker thread, a choice at a
    time: see ``json_off_loop``)."""
    mode, ids = prepared.mode, prepared.ids
    echoed = _echoed(req)

    def choice(c: CompletionOutput) -> ChatChoice:
        lp = _logprobs(state, req, c, 0, len(c.token_ids)) if req.logprobs else None
        split = prepared.split(c)
        # Tool calls are parsed from the answer only, never from the reasoning.
        text = c.text if split is None else split.content or ""
        msg = tool_message(mode, text, c.finish_reason)
        content = echoed + (msg.content or "") if echoed else msg.content
        if split is not None:
            content = content or None  # as vLLM: no answer after the reasoning is null
        message = ChatResponseMessage(
            role=_role(state, req), content=content, tool_calls=msg.tool_calls
        )
        if split is not None and req.include_reasoning:
            message.reasoning = split.reasoning
        return ChatChoice(
            index=c.index,
            message=message,
            logprobs=lp,
            finish_reason=msg.finish_reason,
            stop_reason=c.stop_reason,
        )

    body = ChatCompletionResponse(
        id=reply_id,
        created=created,
        model=state.model_name,
        choices=[],
        usage=usage(
            len(ids),
            sum(len(c.token_ids) for c in out.outputs),
            state.cached(out.num_cached_tokens),
        ),
        prompt_logprobs=_prompt_logprobs(state, req, ids, out.prompt_logprobs),
    )
    return json_in_pieces(body, (choice(c) for c in out.outputs))


async def _stream(
    state: ServerState,
    req: ChatCompletionRequest,
    prepared: PreparedChat,
    request_id: str,
    reply_id: str,
    created: int,
    origin: Origin,
) -> AsyncGenerator[str, None]:
    mode, ids, params = prepared.mode, prepared.ids, prepared.params

    def chunk(
        choices: list[dict], usage_info: dict | None = None, prompt_lp: list | None = None
    ) -> str:
        body = {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": state.model_name,
            "choices": choices,
        }
        if usage_info is not None:
            body["usage"] = usage_info
        if prompt_lp is not None:
            body["prompt_logprobs"] = prompt_lp
        return sse(body)

    include_usage, continuous = StreamOptions.usage_flags(req.stream_options)
    include_usage = include_usage or state.force_usage
    stream = engine_stream(state.engine, ids, params, request_id, origin)
    tally = StreamTally()
    tool_streams: dict[int, ToolStream] = {}
    reasoners: dict[int, ReasoningStream | None] = {}
    try:
        for i in range(req.n):
            yield chunk(
                [
                    {
                        "index": i,
                        "delta": {"role": _role(state, req), "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                usage(len(ids), 0, state.cached(0)).model_dump() if continuous else None,
            )
        echoed = _echoed(req)
        if echoed:  # after the role chunks, before any output (as vLLM sends it)
            for i in range(req.n):
                yield chunk(
                    [
                        {
                            "index": i,
                            "delta": {"content": echoed},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    usage(len(ids), 0, state.cached(0)).model_dump() if continuous else None,
                )
        # Asked-for prompt logprobs ride on the first chunk made from the engine's output.
        prompt_pending = req.prompt_logprobs is not None
        prompt_entries = None  # the engine's prompt logprobs: its first output has them
        async with contextlib.aclosing(merge([stream])) as outputs:
            async for _, out in outputs:
                if out.prompt_logprobs is not None:
                    prompt_entries = out.prompt_logprobs
                reported = tally.reportable(out, 0, bool(req.logprobs) or continuous)
                if prepared.reasoning is not None:
                    # The parser reads every token, also those of an output that makes no
                    # chunk (its text held back for a stop string, or a skipped special
                    # tag): the </think> token may be among them. Such an output's text is
                    # empty, and so is what the parser gives back for it.
                    told = {id(c) for c in reported}
                    for c in out.outputs:
                        if c.num_new_tokens and not c.finished() and id(c) not in told:
                            if c.index not in reasoners:
                                reasoners[c.index] = prepared.reasoning_stream()
                            reasoner = reasoners[c.index]
                            assert reasoner is not None
                            reasoner.feed(c.text_delta, new_tokens(c))
                for c in reported:
                    with_prompt, prompt_pending = prompt_pending, False
                    prompt_lp, lp = await off_loop_if_large(
                        functools.partial(
                            _chunk_logprobs, state, req, ids, prompt_entries, c, with_prompt
                        ),
                        _chunk_entries(req, ids, c, with_prompt),
                    )
                    messages = tool_streams.setdefault(c.index, ToolStream(mode))
                    if c.index not in reasoners:
                        reasoners[c.index] = prepared.reasoning_stream()
                    reasoner = reasoners[c.index]
                    deltas: list[dict] = []
                    if reasoner is None:
                        deltas += messages.feed(c.text_delta)
                    else:
                        # Reasoning first, then the answer, each delta with its own field;
                        # tool calls are parsed from the answer only.
                        piece = reasoner.feed(c.text_delta, new_tokens(c), final=c.finished())
                        if piece.reasoning and req.include_reasoning:
                            deltas.append({"reasoning": piece.reasoning})
                        if piece.answering:
                            deltas += messages.feed(piece.content)
                    finish = None
                    if c.finished():
                        tail, finish = messages.finish(c.finish_reason)
                        deltas += tail
                        if deltas and "tool_calls" in deltas[-1]:
                            # The finish in a chunk of its own, as OpenAI sends it: the
                            # SDK's stream helper ends a call on a chunk after its last
                            # delta, and would never tell a call finished with it.
                            deltas.append({})
                    if not deltas:  # a chunk for the tokens' logprobs or usage, or the finish
                        # Held-back tool-call text, a tag not yet whole, or reasoning
                        # left out: no chunk unless it carries something else.
                        quiet = mode.calls_tools or reasoner is not None
                        if quiet and not (
                            c.finished() or lp or continuous or prompt_lp is not None
                        ):
                            continue
                        deltas = [{} if c.finished() or quiet else {"content": ""}]
                    # vLLM's continuous usage: the prompt and this choice's tokens so far
                    # (with n > 1 each choice counts its own; the closing usage sums them).
                    counted = (
                        usage(
                            len(ids),
                            tally.choice_tokens[c.index],
                            state.cached(tally.cached_tokens),
                        ).model_dump()
                        if continuous
                        else None
                    )
                    for j, delta in enumerate(deltas):
                        last = j == len(deltas) - 1
                        yield chunk(
                            [
                                {
                                    "index": c.index,
                                    "delta": delta,
                                    "logprobs": lp if j == 0 else None,
                                    "finish_reason": finish if last else None,
                                    **(
                                        {"stop_reason": c.stop_reason}
                                        if last and c.finished()
                                        else {}
                                    ),
                                }
                            ],
                            counted,
                            prompt_lp if j == 0 else None,
                        )
        if include_usage:
            yield chunk(
                [],
                usage(
                    len(ids), tally.completion_tokens, state.cached(tally.cached_tokens)
                ).model_dump(),
            )
    except ENGINE_ERRORS as e:
        yield sse_error(engine_error(e))
    except APIError as e:
        yield sse_error(e)
    except Exception:  # our bug: an error event, not a connection cut mid-body
        yield sse_error(stream_failure("/v1/chat/completions"))
    finally:
        await stream.aclose()
    yield SSE_DONE
