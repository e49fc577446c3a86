"""POST /v1/completions: legacy text completions, streaming or not."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, replace

from fastapi import Request
from fastapi.responses import Response

from sarathi.entrypoints.openai_server.errors import APIError, bad_request, sse_error
from sarathi.entrypoints.openai_server.field_audit import audit
from sarathi.entrypoints.openai_server.protocol import (
    MAX_SEQUENCES,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    PromptLogprobs,
    StreamOptions,
    UsageInfo,
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
from sarathi.outputs import CompletionOutput, Logprob, RequestOutput
from sarathi.sampling_params import SamplingParams


@dataclass
class _Prompt:
    text: str | None
    ids: list[int]


async def _prompts(state: ServerState, req: CompletionRequest) -> list[_Prompt]:
    p = req.prompt
    if isinstance(p, str):
        items: list = [p]
    elif p and isinstance(p[0], int):
        items = [p]
    else:
        items = list(p)
    keep = req.truncate_prompt_tokens
    if keep is None:
        for item in items:  # refuse oversized text before any of it is tokenized
            if isinstance(item, str):
                state.check_text_size(item, "prompt")
    out = []
    for item in items:
        if isinstance(item, str):
            ids = await state.encode(item, "prompt", req.add_special_tokens, keep is not None)
            text: str | None = item
        else:
            ids, text = list(item), None
        kept = state.truncate(ids, keep)
        # A cut prompt is echoed as the tokens the model saw (so echo's logprobs and text
        # offsets match its text), decoded from them.
        out.append(_Prompt(text if len(kept) == len(ids) else None, kept))
    return out


class _TextOffsets:
    """Where each token of a choice starts in its text (OpenAI's ``text_offset``), token
    after token, across a stream's chunks. A token whose text is U+FFFD alone or in part
    may write part of a character (byte-level vocabularies spell one character in up to
    four tokens): it starts where that character does, and the character counts once, when
    its last byte comes, so offsets index the text as the client has it. Tokens named
    "token_id:<id>" count their names, as vLLM's."""

    def __init__(self, start: int = 0) -> None:
        self.next = start
        self._chars = codecs.getincrementaldecoder("utf-8")("replace")

    def take(self, state: ServerState, token_id: int, name: str, as_id: bool) -> int:
        if not as_id and "\ufffd" in name:
            at = self.next
            self.next += len(self._chars.decode(bytes(state.token_bytes(token_id))))
            return at
        # Bytes of a character no token finished show as U+FFFD before this token.
        self.next += len(self._chars.decode(b"", final=True))
        at = self.next
        self.next += len(name)
        return at


def _logprobs(
    state: ServerState,
    req: CompletionRequest,
    token_ids: list[int],
    entries: list[dict[int, Logprob] | None],
    offsets: _TextOffsets,
) -> CompletionLogprobs:
    """Legacy-format logprobs of tokens with their entries (None: nothing scored the token,
    as the prompt's first), named by their texts or "token_id:<id>" (vLLM's
    return_tokens_as_token_ids); ``offsets`` gives their text offsets and moves past them."""
    k = req.logprobs or 0
    as_id = state.names_ids(req.return_tokens_as_token_ids)
    lp = CompletionLogprobs()
    for tid, entry in zip(token_ids, entries, strict=True):
        text = state.token_name(tid, as_id)
        lp.tokens.append(text)
        lp.text_offset.append(offsets.take(state, tid, text, as_id))
        if entry is None:
            lp.token_logprobs.append(None)
            lp.top_logprobs.append(None)
            continue
        lp.token_logprobs.append(entry[tid].logprob if tid in entry else None)
        # The k most likely and the token itself (up to k + 1 entries), as OpenAI and vLLM
        # return them: with logprobs=0, just the token.
        top = sorted(entry.items(), key=lambda kv: kv[1].rank)[:k]
        if tid in entry and all(t != tid for t, _ in top):
            top.append((tid, entry[tid]))
        lp.top_logprobs.append({state.token_name(t, as_id): v.logprob for t, v in top} or None)
    return lp


def _output_entries(c: CompletionOutput, start: int, end: int) -> list[dict[int, Logprob] | None]:
    have = c.logprobs or []
    return [have[pos] if pos < len(have) else None for pos in range(start, end)]


def _prompt_logprobs_k(req: CompletionRequest) -> int | None:
    """What the engine scores of the prompt: echo with logprobs shows the prompt's tokens'
    logprobs first (vLLM's and OpenAI's echo), so it needs at least ``logprobs`` of them."""
    asked = [k for k in (req.prompt_logprobs, req.logprobs if req.echo else None) if k is not None]
    return max(asked) if asked else None


def _prompt_logprobs(
    state: ServerState, req: CompletionRequest, p: _Prompt, out: RequestOutput
) -> PromptLogprobs | None:
    if req.prompt_logprobs is None or out.prompt_logprobs is None:
        return None
    return prompt_logprobs_body(state, p.ids, out.prompt_logprobs, req.prompt_logprobs)


async def create_completion(state: ServerState, req: CompletionRequest, raw: Request) -> Response:
    state.check_model(req.model)
    audit(req, state.warned_fields)
    state.check_priority(req.priority)
    origin = origin_of(raw, req.priority, req.cache_salt)
    state.check_admission(origin)  # before the prompt's tokenization, which a burst queues for
    counts = {"logprobs": req.logprobs, "prompt_logprobs": req.prompt_logprobs}
    req = req.model_copy(update=state.check_logprobs(counts))
    if req.suffix:
        raise bad_request("suffix is not supported", "suffix")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options is only taken with stream: true", "stream_options")
    if req.best_of is not None and req.best_of != req.n:
        raise bad_request("best_of other than n is not supported", "best_of")
    if req.max_tokens == 0 and not req.echo:
        raise bad_request(
            "max_tokens 0 asks for no completion; it is taken with echo (scoring the prompt)",
            "max_tokens",
        )
    spec, spec_param = structured_outputs(req)
    await state.check_structured(spec, spec_param)
    prompts = await _prompts(state, req)
    if len(prompts) * req.n > MAX_SEQUENCES:
        raise bad_request(f"at most {MAX_SEQUENCES} completions (prompts x n) per request", "n")
    params = []
    for p in prompts:
        # Scoring a prompt (max_tokens 0 with echo) runs one step, whose token is dropped.
        asked = 1 if req.max_tokens == 0 else req.max_tokens
        max_tokens = state.check_prompt(p.ids, asked, "prompt")
        params.append(
            sampling_params(
                req,
                max_tokens,
                req.logprobs,
                state.default_sampling,
                spec,
                _prompt_logprobs_k(req),
            )
        )
    state.check_params(params[0])  # the prompts' params differ only in max_tokens
    request_id = f"cmpl-{uuid.uuid4().hex}"  # the engine's
    reply_id = response_id("cmpl", req.request_id, raw, request_id)
    created = int(time.time())
    n = len(prompts) * req.n  # each sample takes a slot, and waits for one like a request
    state.admit(n, origin)
    if req.stream:
        return SSEResponse(
            _stream(state, req, prompts, params, request_id, reply_id, created, origin),
            on_close=lambda: state.release(n, origin),
        )
    try:
        return await unless_disconnected(
            raw, _full(state, req, prompts, params, request_id, reply_id, created, origin)
        )
    except ClientDisconnected:
        return Response(status_code=499)
    finally:
        state.release(n, origin)


def _prompt_only(out: RequestOutput) -> RequestOutput:
    """A finished output with its completion dropped: what max_tokens 0 with echo returns."""
    empty = [
        replace(
            c,
            text="",
            token_ids=[],
            logprobs=[],
            text_delta="",
            num_new_tokens=0,
            finish_reason="length",
            stop_reason=None,
        )
        for c in out.outputs
    ]
    return replace(out, outputs=empty)


async def _full(
    state: ServerState,
    req: CompletionRequest,
    prompts: list[_Prompt],
    params: list[SamplingParams],
    request_id: str,
    reply_id: str,
    created: int,
    origin: Origin,
) -> Response:
    engine = state.engine
    try:
        finals = await asyncio.gather(
            *[
                final_output(engine, p.ids, sp, f"{request_id}-{i}", origin)
                for i, (p, sp) in enumerate(zip(prompts, params, strict=True))
            ]
        )
    except ENGINE_ERRORS as e:
        raise engine_error(e) from e
    if req.max_tokens == 0:
        finals = [_prompt_only(out) for out in finals]
    return await json_off_loop(lambda: _full_body(state, req, prompts, finals, reply_id, created))


def _full_body(
    state: ServerState,
    req: CompletionRequest,
    prompts: list[_Prompt],
    finals: list[RequestOutput],
    reply_id: str,
    created: int,
) -> bytes:
    """The response to finished requests, as JSON (in a worker thread, a choice at a time:
    see ``json_off_loop``)."""

    def choices() -> Iterator[CompletionChoice]:
        for i, (p, out) in enumerate(zip(prompts, finals, strict=True)):
            prefix = ""
            if req.echo:
                prefix = p.text if p.text is not None else state.decode_now(p.ids)
            prompt_lp = _prompt_logprobs(state, req, p, out)
            for c in out.outputs:
                lp = None
                if req.logprobs is not None:
                    ids, entries = c.token_ids, _output_entries(c, 0, len(c.token_ids))
                    offsets = _TextOffsets(len(prefix))
                    if req.echo:  # the prompt's tokens first, offsets running on
                        assert out.prompt_logprobs is not None
                        ids, entries = p.ids + ids, out.prompt_logprobs + entries
                        offsets = _TextOffsets(0)
                    lp = _logprobs(state, req, ids, entries, offsets)
                yield CompletionChoice(
                    index=i * req.n + c.index,
                    text=prefix + c.text,
                    logprobs=lp,
                    finish_reason=c.finish_reason,
                    stop_reason=c.stop_reason,
                    prompt_logprobs=prompt_lp,
                    prompt_token_ids=p.ids if req.return_token_ids else None,
                    token_ids=list(c.token_ids) if req.return_token_ids else None,
                )

    body = CompletionResponse(
        id=reply_id,
        created=created,
        model=state.model_name,
        choices=[],
        usage=usage(
            sum(len(p.ids) for p in prompts),
            sum(len(c.token_ids) for out in finals for c in out.outputs),
            state.cached(sum(out.num_cached_tokens for out in finals)),
        ),
    )
    return json_in_pieces(body, choices())


async def _stream(
    state: ServerState,
    req: CompletionRequest,
    prompts: list[_Prompt],
    params: list[SamplingParams],
    request_id: str,
    reply_id: str,
    created: int,
    origin: Origin,
) -> AsyncGenerator[str, None]:
    def chunk(
        index: int,
        text: str,
        lp: CompletionLogprobs | None,
        finish: str | None,
        stop_reason: int | str | None = None,
        usage_info: UsageInfo | None = None,
        prompt_lp: PromptLogprobs | None = None,
        token_ids: list[int] | None = None,
    ) -> str:
        choice: dict = {
            "index": index,
            "text": text,
            "logprobs": lp.model_dump() if lp is not None else None,
            "finish_reason": finish,
            "stop_reason": stop_reason,
        }
        if prompt_lp is not None:
            choice["prompt_logprobs"] = prompt_logprobs_json(prompt_lp)
        if req.return_token_ids:
            # As vLLM streams them: the prompt's ids in a choice's first chunk, then each
            # chunk's own new ids.
            if index not in ids_sent:
                ids_sent.add(index)
                choice["prompt_token_ids"] = prompts[index // req.n].ids
            choice["token_ids"] = token_ids or []
        body: dict = {
            "id": reply_id,
            "object": "text_completion",
            "created": created,
            "model": state.model_name,
            "choices": [choice],
        }
        if usage_info is not None:
            body["usage"] = usage_info.model_dump()
        return sse(body)

    def choice_chunks(
        i: int,
        out: RequestOutput,
        c: CompletionOutput,
        index: int,
        counted: UsageInfo | None,
        first: bool,
    ) -> list[str]:
        """The chunks an output makes for one of its choices (in a worker thread when they
        carry many logprobs: see ``off_loop_if_large``)."""
        pieces = []
        # A choice's first chunk carries the asked-for prompt logprobs; echo with logprobs
        # needs them first, so its prompt chunk comes now.
        prompt_lp = None
        if first:
            prompt_lp = _prompt_logprobs(state, req, prompts[i], out)
            if req.echo and req.logprobs is not None:
                assert out.prompt_logprobs is not None
                offsets[index] = _TextOffsets(0)
                echoed = _logprobs(state, req, prompts[i].ids, out.prompt_logprobs, offsets[index])
                pieces.append(chunk(index, echo_texts[i], echoed, None, None, counted, prompt_lp))
                prompt_lp = None
        lp = None
        end = len(c.token_ids)
        start = end - c.num_new_tokens
        if req.logprobs is not None:
            at = offsets.setdefault(index, _TextOffsets(0))
            lp = _logprobs(state, req, c.token_ids[start:end], _output_entries(c, start, end), at)
        stop_reason = c.stop_reason if c.finished() else None
        pieces.append(
            chunk(
                index,
                c.text_delta,
                lp,
                c.finish_reason,
                stop_reason,
                counted,
                prompt_lp,
                list(c.token_ids[start:end]),
            )
        )
        return pieces

    streams = [
        engine_stream(state.engine, p.ids, sp, f"{request_id}-{i}", origin)
        for i, (p, sp) in enumerate(zip(prompts, params, strict=True))
    ]
    include_usage, continuous = StreamOptions.usage_flags(req.stream_options)
    include_usage = include_usage or state.force_usage
    prompt_tokens = sum(len(p.ids) for p in prompts)
    tally = StreamTally()
    offsets: dict[int, _TextOffsets] = {}  # choice -> its tokens' text offsets (logprobs)
    started: set[int] = set()  # choices that had a chunk made from an output
    ids_sent: set[int] = set()  # choices whose prompt_token_ids were sent (return_token_ids)
    try:
        echo_texts = (
            [p.text if p.text is not None else await state.decode(p.ids) for p in prompts]
            if req.echo
            else []
        )
        if req.echo and req.logprobs is None:
            # Before any token: continuous usage counts the choice's prompt alone.
            for i, text in enumerate(echo_texts):
                opening = usage(len(prompts[i].ids), 0, state.cached(0)) if continuous else None
                for j in range(req.n):
                    yield chunk(i * req.n + j, text, None, None, usage_info=opening)
        # Every new token makes a chunk when its logprobs or ids were asked for (logprobs=0
        # too): a token whose text is held back (or, with no tokenizer, empty) has them.
        wants_tokens = req.logprobs is not None or bool(req.return_token_ids)
        # Prompt index -> its engine prompt logprobs: a delta request's first output has
        # them, and a choice's first chunk may come from a later one (n > 1, text held back).
        prompt_entries: dict[int, list] = {}
        async with contextlib.aclosing(merge(streams)) as outputs:
            async for i, out in outputs:
                if out.prompt_logprobs is not None:
                    prompt_entries[i] = out.prompt_logprobs
                elif i in prompt_entries:
                    out = replace(out, prompt_logprobs=prompt_entries[i])
                if req.max_tokens == 0:
                    if not out.finished:
                        continue
                    out = _prompt_only(out)
                for c in tally.reportable(out, i * req.n, wants_tokens or continuous):
                    index = i * req.n + c.index
                    # With continuous_usage_stats every chunk carries its choice's usage so
                    # far, the echoed prompt's too: as vLLM reports it, the choice's prompt
                    # and its own tokens (not the request's totals over every prompt and
                    # choice, which only the closing usage chunk sums).
                    counted = (
                        usage(
                            len(prompts[i].ids),
                            tally.choice_tokens[index],
                            state.cached(tally.cached.get(out.request_id, 0)),
                        )
                        if continuous
                        else None
                    )
                    first = index not in started
                    started.add(index)
                    # The prompt's logprobs (prompt_logprobs, echo's) come with a choice's
                    # first chunk.
                    k = _prompt_logprobs_k(req) if first else None
                    entries = (len(prompts[i].ids) * (k + 1) if k is not None else 0) + (
                        c.num_new_tokens * (req.logprobs + 1) if req.logprobs is not None else 0
                    )
                    render = functools.partial(choice_chunks, i, out, c, index, counted, first)
                    for piece in await off_loop_if_large(render, entries):
                        yield piece
        if include_usage:
            yield sse(
                {
                    "id": reply_id,
                    "object": "text_completion",
                    "created": created,
                    "model": state.model_name,
                    "choices": [],
                    "usage": usage(
                        prompt_tokens, tally.completion_tokens, state.cached(tally.cached_tokens)
                    ).model_dump(),
                }
            )
    except ENGINE_ERRORS as e:
        yield sse_error(engine_error(e))
    except APIError as e:
        yield sse_error(e)
    except Exception:  # our bug: an error event, not a connection cut mid-body
        yield sse_error(stream_failure("/v1/completions"))
    finally:
        for s in streams:
            await s.aclose()
    yield SSE_DONE
