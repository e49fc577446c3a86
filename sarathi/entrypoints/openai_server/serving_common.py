"""What every OpenAI route shares before it answers: the server state, model checks,
tokenization, sampling parameters, prompt limits and the engine's errors as API errors (how
a route then answers, whole or streamed: ``responding.py``).

Tokenizing, chat templating and detokenizing prompts run in worker threads, never on the
event loop (one large prompt must not freeze every other stream), and a prompt too long in
bytes to fit the context in any tokenization is refused before it is tokenized at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sarathi.engine.async_engine import (
    AsyncEngine,
    EngineDeadError,
    EngineOverloaded,
    EngineShuttingDown,
    RequestFailed,
)
from sarathi.engine.llm_engine import CONTEXT_LENGTH_EXCEEDED, RequestError
from sarathi.entrypoints.openai_server.background_responses import BackgroundResponses
from sarathi.entrypoints.openai_server.errors import APIError, bad_request
from sarathi.entrypoints.openai_server.limits import BodyLimits
from sarathi.entrypoints.openai_server.protocol import (
    PromptLogprob,
    PromptLogprobs,
    SamplingFields,
)
from sarathi.entrypoints.openai_server.responding import Origin
from sarathi.entrypoints.openai_server.response_store import ResponseStore
from sarathi.metrics import ServerMetrics
from sarathi.outputs import Logprob
from sarathi.reasoning import ReasoningParser
from sarathi.sampling_params import SamplingParams, StructuredOutputsParams

logger = logging.getLogger("sarathi.server")

T = TypeVar("T")


@dataclass
class ServerState:
    """Everything the routes need, kept on ``app.state.sarathi`` (no module globals)."""

    engine: AsyncEngine
    model_name: str
    max_seq_len: int
    metrics: ServerMetrics
    # The other --served-model-name names: accepted in requests and listed; responses carry
    # model_name, as in vLLM.
    model_aliases: tuple[str, ...] = ()
    chat_template: str | None = None
    # --default-chat-template-kwargs: every chat request's, under its own.
    default_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # The tool-call format parsed in tool_choice "auto" (None: unknown, auto is refused).
    tool_parser: str | None = None
    # --reasoning-parser's (None: reasoning stays in the text).
    reasoning: ReasoningParser | None = None
    description: str | None = None
    # Prompts longer than this in UTF-8 bytes cannot fit the context (max_token_bytes).
    max_prompt_bytes: int = 1 << 62
    max_waiting_requests: int = 1024  # 0: no bound
    prompt_tokens_details: bool = False  # usage says how many prompt tokens were cached
    # --enable-force-include-usage: every stream ends with a usage chunk.
    force_usage: bool = False
    response_role: str = "assistant"  # --response-role
    content_format: str = "auto"  # --chat-template-content-format
    # --return-tokens-as-token-ids: logprobs name tokens "token_id:<id>" unless a request
    # says otherwise.
    tokens_as_ids: bool = False
    # Request fields this server does not know, already logged once (field_audit.audit).
    warned_fields: set[str] = field(default_factory=set)
    body_limits: BodyLimits = field(
        default_factory=lambda: BodyLimits(4 * 1024 * 1024, 30.0, 256 * 1024 * 1024)
    )
    created: int = field(default_factory=lambda: int(time.time()))
    # Pools of their own for work that can take seconds, so that it waits for its like and
    # never holds the default pool, which tokenizes every prompt: grammars (a{900000} took
    # 7 s to compile; eight such requests held every default thread), large request
    # bodies' parsing (routes.OffLoopJSONRequest), and text longer than the context taken
    # whole (/tokenize, prompts to be cut by truncate_prompt_tokens: six 3.9 MB ones held
    # the default pool 13 s), one at a time. Shut down with the app.
    grammar_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="sarathi-grammar")
    )
    body_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="sarathi-body")
    )
    long_text_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="sarathi-long-text")
    )
    # Stored responses of the Responses API (store, previous_response_id, GET by id),
    # bounded by --responses-store-max-entries and --responses-store-max-mb.
    responses: ResponseStore = field(default_factory=ResponseStore)
    # Background responses running now (each also one admitted request).
    background: BackgroundResponses = field(default_factory=BackgroundResponses)
    # token id -> its text, and its bytes, for logprobs; bounded by the vocabulary.
    _token_text: dict[int, str] = field(default_factory=dict)
    _token_bytes: dict[int, list[int]] = field(default_factory=dict)

    @property
    def default_sampling(self) -> dict[str, Any]:
        return self.engine.engine.setup.default_sampling

    @property
    def tokenizer(self) -> Any:
        return self.engine.engine.tokenizer

    def cached(self, tokens: int) -> int | None:
        """Cached prompt tokens as usage reports them: only with --enable-prompt-tokens-details."""
        return tokens if self.prompt_tokens_details else None

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in (self.model_name, *self.model_aliases):
            served = ", ".join(repr(n) for n in (self.model_name, *self.model_aliases))
            raise APIError(
                f"the model {name!r} does not exist; this server serves {served}",
                404,
                param="model",
                code="model_not_found",
            )

    def admit(self, num_requests: int, origin: Origin) -> None:
        """Count requests in (one per sample: prompts times ``n``), or refuse them at once
        (503, Retry-After) when the server is overloaded or stopping; ``release`` them when
        their response is done."""
        self._refuse_on(
            lambda: self.engine.admit(num_requests, self.max_waiting_requests, origin.client)
        )

    def check_admission(self, origin: Origin) -> None:
        """Refuse a request at once (503) if ``admit`` would refuse it now: called before its
        prompt is tokenized, so while the tokenizer's few threads are busy (long prompts
        arriving) a request the queue has no room for is not held until one is free."""
        self._refuse_on(
            lambda: self.engine.check_admission(self.max_waiting_requests, origin.client)
        )

    def _refuse_on(self, check: Callable[[], None]) -> None:
        try:
            check()
        except ENGINE_ERRORS as e:
            if isinstance(e, EngineOverloaded):
                self.metrics.count_rejected("overloaded")
            raise engine_error(e) from e

    def release(self, num_requests: int, origin: Origin) -> None:
        self.engine.release(num_requests, origin.client)

    def check_prompt_bytes(self, size: int, param: str) -> None:
        if size > self.max_prompt_bytes:
            # Begins in OpenAI's words, as _overflow_message does (clients match them).
            raise APIError(
                f"This model's maximum context length is {self.max_seq_len} tokens. However, "
                f"the prompt is {size} bytes long, and that context holds at most "
                f"{self.max_prompt_bytes} bytes of text with this tokenizer, so it was "
                "refused without tokenizing it. Please reduce the length of the prompt.",
                param=param,
                code=CONTEXT_LENGTH_EXCEEDED,
            )

    def check_text_size(self, text: str, param: str) -> None:
        # Characters are a lower bound on bytes: most oversized prompts stop here, and the
        # exact count is taken only for the rest.
        if len(text) > self.max_prompt_bytes:
            self.check_prompt_bytes(len(text), param)
        self.check_prompt_bytes(len(text.encode("utf-8")), param)

    def require_tokenizer(self, param: str) -> Any:
        tok = self.tokenizer
        if tok is None:
            raise bad_request(
                "this server runs without a tokenizer (--skip-tokenizer-init): send prompts as "
                "token ids; chat, stop strings and text outputs need a tokenizer",
                param,
            )
        return tok

    async def encode(
        self, text: str, param: str, add_special_tokens: bool = True, any_length: bool = False
    ) -> list[int]:
        """Token ids of a prompt, tokenized in a worker thread. ``any_length``: text too
        long for the context is tokenized too, not refused unread (the body limit still
        bounds it): a prompt that will be cut to its last tokens (truncate_prompt_tokens),
        or one /tokenize counts."""
        tok = self.require_tokenizer(param)
        if not any_length:
            self.check_text_size(text, param)
        return await self.off_loop(
            lambda: list(tok.encode(text, add_special_tokens=add_special_tokens)),
            long=len(text) > self.max_prompt_bytes,
        )

    async def off_loop(self, work: Callable[[], T], long: bool) -> T:
        """``work`` in a worker thread: the default pool's, or with ``long`` (text longer
        than the context could hold) the long-text pool's, where it waits for its like."""
        if not long:
            return await asyncio.to_thread(work)
        return await asyncio.get_running_loop().run_in_executor(self.long_text_threads, work)

    async def decode(self, ids: list[int]) -> str:
        """Text of token ids, decoded in a worker thread ("" without a tokenizer)."""
        return await asyncio.to_thread(self.decode_now, ids)

    def decode_now(self, ids: list[int]) -> str:
        """Text of token ids, in this thread ("" without a tokenizer)."""
        return "" if self.tokenizer is None else self.tokenizer.decode(ids)

    def names_ids(self, asked: bool | None) -> bool:
        """Whether a request's logprobs name tokens "token_id:<id>": its
        return_tokens_as_token_ids (``asked``), else the server's flag."""
        return self.tokens_as_ids if asked is None else asked

    def token_name(self, token_id: int, as_id: bool) -> str:
        """A token as logprobs name it: "token_id:<id>" (``as_id``) or its text."""
        return f"token_id:{token_id}" if as_id else self.token_text(token_id)

    def token_text(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            # Without a tokenizer a token is named by its id, as vLLM names them then.
            tok = self.tokenizer
            text = f"token_id:{token_id}" if tok is None else tok.decode([token_id])
            self._token_text[token_id] = text
        return text

    async def check_structured(self, spec: StructuredOutputsParams | None, param: str) -> None:
        """Compile the request's grammar in a worker thread (a large schema takes a while;
        the engine loop then finds it cached); 400 when it is invalid."""
        if spec is None:
            return
        self.require_tokenizer(param)
        compile_grammar = self.engine.engine.structured.compile
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.grammar_threads, compile_grammar, spec
            )
        except ValueError as e:
            raise bad_request(str(e), param) from e

    async def special_tokens(self, texts: Sequence[str], param: str) -> dict[str, int]:
        """Those of ``texts`` that are one special token of the grammar engine's vocabulary,
        with its id (in a worker thread: the vocabulary is read on first use); 400 when the
        engine cannot read the tokenizer."""
        if not texts:
            return {}
        find = self.engine.engine.structured.special_tokens
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.grammar_threads, find, texts
            )
        except ValueError as e:
            raise bad_request(str(e), param) from e

    def token_bytes(self, token_id: int) -> list[int]:
        """The bytes the token writes (OpenAI's ``bytes``): its own, also for a token that is
        part of a character (whose text alone is U+FFFD) and for a PatchTokenizer's n-grams."""
        raw = self._token_bytes.get(token_id)
        if raw is None:
            try:
                vocabulary = self.engine.engine.structured.vocabulary
            except ValueError:  # no tokenizer, or one the grammar engine cannot read
                vocabulary = None
            if vocabulary is not None and token_id < vocabulary.vocab_size:
                raw = list(vocabulary.decode_bytes([token_id]))
            else:  # also the model's padded rows past the tokenizer's vocabulary
                raw = list(self.token_text(token_id).encode("utf-8"))
            self._token_bytes[token_id] = raw
        return raw

    def check_priority(self, priority: int) -> None:
        """400 for a nonzero priority under the fcfs policy (vLLM's rule), before the
        prompt is tokenized or a stream starts."""
        try:
            self.engine.engine.validate_priority(priority)
        except RequestError as e:
            raise bad_request(str(e), e.param) from e

    def check_logprobs(self, counts: dict[str, int | None]) -> dict[str, int]:
        """400 for a logprobs count (by its field's name) past the engine's --max-logprobs,
        before the prompt is tokenized or a stream starts. Returns the counts of -1 (vLLM's:
        the whole vocabulary) as the vocabulary's size, for the request to be updated with."""
        engine = self.engine.engine
        try:
            for param, count in counts.items():
                engine.check_logprobs(count, param)
        except RequestError as e:
            raise bad_request(str(e), e.param) from e
        return {p: engine.logprobs_count(-1) for p, count in counts.items() if count == -1}

    def check_params(self, params: SamplingParams) -> None:
        """400 for token ids the model does not have (logit_bias, allowed_token_ids), before
        a stream starts (the engine would refuse them inside it)."""
        try:
            self.engine.engine.validate_params(params)
        except RequestError as e:
            raise bad_request(str(e), e.param) from e

    def truncate(self, ids: list[int], keep: int | None) -> list[int]:
        """The prompt as vLLM's ``truncate_prompt_tokens`` leaves it (the engine's rule),
        cut before its length is checked so that usage counts the tokens the model sees."""
        return self.engine.engine.truncate_prompt(ids, keep)

    def check_prompt(
        self, ids: list[int], max_tokens: int | None, param: str, tokens_param: str = "max_tokens"
    ) -> int:
        """Validate a tokenized prompt; returns the max_tokens to use (None: the rest),
        within the model's max_new_tokens where it has one (vLLM's server-wide cap)."""
        try:
            self.engine.engine.validate_prompt(ids)
        except RequestError as e:
            if e.code == CONTEXT_LENGTH_EXCEEDED and not self.engine.engine.cache_bound:
                # OpenAI's wording: clients (LiteLLM, LangChain) tell an overflow, to trim the
                # history and retry, by "maximum context length" as well as by the code. Where
                # the KV cache is the bound, the engine's message names it instead.
                raise APIError(
                    _overflow_message(len(ids), self.max_seq_len, param),
                    param=param,
                    code=e.code,
                ) from e
            raise APIError(str(e), param=param, code=e.code) from e
        room = self.max_seq_len - len(ids)
        cap = self.engine.engine.setup.max_new_tokens or room
        if max_tokens is None:
            return min(room, cap)
        if max_tokens > room:
            raise APIError(
                f"This model's maximum context length is {self.max_seq_len} tokens. However, you "
                f"requested {len(ids) + max_tokens} tokens ({len(ids)} in the prompt, "
                f"{max_tokens} in the completion). Reduce the length of the prompt or of "
                f"{tokens_param}.",
                param=tokens_param,
                code=CONTEXT_LENGTH_EXCEEDED,
            )
        return min(max_tokens, cap)


def _overflow_message(num_tokens: int, max_seq_len: int, param: str) -> str:
    """OpenAI's message for a prompt the context cannot hold (``param``: the field it came
    from: "messages", "input" or "prompt"). A prompt of exactly the context's length is
    refused too: it leaves no room for a generated token."""
    what = "prompt" if param == "prompt" else param
    room = ", which leaves no room for the completion" if num_tokens == max_seq_len else ""
    return (
        f"This model's maximum context length is {max_seq_len} tokens. However, your {what} "
        f"resulted in {num_tokens} tokens{room}. Please reduce the length of the {what}."
    )


def structured_outputs(
    req: SamplingFields, response_format: str = "response_format"
) -> tuple[StructuredOutputsParams | None, str]:
    """The request's output constraint, and the field it came from (for errors);
    ``response_format`` is that field's name on the request's route."""
    found: list[tuple[str, StructuredOutputsParams]] = []

    def add(param: str, **spec: Any) -> None:
        # A value the constraint refuses (an empty regex or grammar) is named by the field
        # it came from, not as structured_outputs.
        try:
            found.append((param, StructuredOutputsParams(**spec)))
        except ValueError as e:
            raise bad_request(str(e), param) from e

    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        add(response_format, json_object=True)
    elif rf is not None and rf.type == "json_schema" and rf.json_schema is not None:
        add(response_format, json=rf.json_schema.schema_)
    so = req.structured_outputs
    if so is not None:
        add(
            "structured_outputs",
            json=so.json_,
            json_object=bool(so.json_object),
            regex=so.regex,
            choice=tuple(so.choice) if so.choice is not None else None,
            grammar=so.grammar,
        )
    if req.guided_json is not None:
        add("guided_json", json=req.guided_json)
    if req.guided_regex is not None:
        add("guided_regex", regex=req.guided_regex)
    if req.guided_choice is not None:
        add("guided_choice", choice=tuple(req.guided_choice))
    if req.guided_grammar is not None:
        add("guided_grammar", grammar=req.guided_grammar)
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise bad_request(f"set only one output constraint; this request sets {names}", found[1][0])
    return (found[0][1], found[0][0]) if found else (None, "")


def sampling_params(
    req: SamplingFields,
    max_tokens: int,
    logprobs: int | None,
    defaults: dict[str, Any],
    structured: StructuredOutputsParams | None = None,
    prompt_logprobs: int | None = None,
) -> SamplingParams:
    """SamplingParams from the request; fields it leaves out take ``defaults`` (the model's,
    per --generation-config), then SamplingParams' own."""
    kwargs: dict[str, Any] = dict(defaults)
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
    ):
        value = getattr(req, name)
        if value is not None:
            kwargs[name] = value
    logit_bias = None
    if req.logit_bias:
        # Digits only: int() also reads "-1" (then blamed on its value by SamplingParams),
        # "+7", " 7" and "5_0" (token 50). The keys at fault are named, as vLLM names them.
        wrong = [k for k in req.logit_bias if not k.isascii() or not k.isdigit()]
        if wrong:
            shown = ", ".join(repr(k) for k in wrong[:5]) + (", ..." if len(wrong) > 5 else "")
            raise bad_request(
                f"logit_bias keys must be token ids (non-negative integers), got {shown}",
                "logit_bias",
            )
        logit_bias = {int(k): v for k, v in req.logit_bias.items()}
    try:
        return SamplingParams(
            n=req.n,
            logit_bias=logit_bias,
            allowed_token_ids=req.allowed_token_ids,
            bad_words=req.bad_words,
            stop=req.stop,
            stop_token_ids=req.stop_token_ids or [],
            max_tokens=max_tokens,
            min_tokens=req.min_tokens,
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            skip_special_tokens=req.skip_special_tokens,
            spaces_between_special_tokens=req.spaces_between_special_tokens,
            include_stop_str_in_output=req.include_stop_str_in_output,
            structured_outputs=structured,
            **kwargs,
        )
    except ValueError as e:
        # SamplingParams names the field first in its messages.
        raise bad_request(str(e), str(e).split(" ", 1)[0]) from e


def prompt_logprobs_body(
    state: ServerState,
    prompt: list[int],
    entries: list[dict[int, Logprob] | None],
    k: int,
) -> PromptLogprobs:
    """vLLM's prompt_logprobs: per position, the prompt token and its ``k`` most likely
    alternatives (the engine may have scored more, for echo's logprobs)."""
    body: PromptLogprobs = []
    for token, entry in zip(prompt, entries, strict=True):
        if entry is None:
            body.append(None)
            continue
        body.append(
            {
                str(t): PromptLogprob(
                    logprob=lp.logprob, rank=lp.rank, decoded_token=state.token_text(t)
                )
                for t, lp in entry.items()
                if t == token or lp.rank <= k
            }
        )
    return body


def prompt_logprobs_json(body: PromptLogprobs) -> list[dict[str, dict[str, Any]] | None]:
    """The body as JSON values, for a streamed chunk."""
    return [None if p is None else {t: v.model_dump() for t, v in p.items()} for p in body]


def engine_error(e: Exception) -> APIError:
    if isinstance(e, RequestError):
        return APIError(str(e), param=e.param, code=e.code)
    if isinstance(e, EngineShuttingDown):
        return APIError(str(e), 503, type="server_error", code="shutting_down")
    if isinstance(e, EngineOverloaded):
        return APIError(str(e), 503, type="overloaded_error", code="overloaded", retry_after=1)
    if isinstance(e, RequestFailed):
        return APIError(str(e), 500, type="server_error", code="internal_error")
    return APIError(str(e), 503, type="server_error", code="engine_dead")


ENGINE_ERRORS = (RequestError, EngineShuttingDown, EngineDeadError, EngineOverloaded, RequestFailed)


def stream_failure(route: str) -> APIError:
    """The error to send when a stream's own code fails (our bug), called in its ``except``:
    once the response has started, an exception left to propagate cuts the connection
    mid-body with no word to the client; as vLLM's streams, it gets an error event and the
    stream's end instead. The traceback goes to the log, as the catch-all 500's does."""
    logger.exception("internal error while streaming %s", route)
    return APIError("internal server error", 500, type="server_error", code="internal_error")
