"""Request and response bodies of the OpenAI-compatible API (pydantic models).

Requests bound every size a client controls (number of prompts, n, stop strings, messages)
so that no single request can ask for unbounded work; the body size itself is bounded by
the server's --max-request-bytes. Scalars are strict, as OpenAI's API is: ``"max_tokens":
"16"`` or ``"stream": "yes"`` is a 400, not a silent conversion. Unknown fields are ignored,
as OpenAI clients send extras.
"""

from __future__ import annotations

import functools
import json
import time
import typing
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_serializer,
    model_validator,
)

from sarathi.sampling_params import is_unicode, keeps_prompt_tail
from sarathi.transformers_utils.chat import ReasoningEffort, parts_text

MAX_N = 128  # completions per prompt (OpenAI's bound)
MAX_PROMPTS = 64  # prompts in one /v1/completions request
MAX_SEQUENCES = 128  # prompts x n
MAX_STOP = 16
MAX_STOP_LEN = 256
MAX_BAD_WORDS = 128
MAX_MESSAGES = 1024
MAX_LOGIT_BIAS = 1024
# JSON nesting of a request body; llguidance reads a schema no deeper anyway.
MAX_DEPTH = 128


def _at_most(limit: int, value: Any) -> Any:
    """A mapping's size, checked before its entries. pydantic checks ``max_length`` after
    validating every entry, and fail_fast is for lists only: half a million bad entries
    took seconds of the event loop to report, one error each."""
    if isinstance(value, dict) and len(value) > limit:
        raise ValueError(f"Dictionary should have at most {limit} items, not {len(value)}")
    return value


TokenId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
StopStr = Annotated[StrictStr, Field(min_length=1, max_length=MAX_STOP_LEN)]
Stop = StopStr | Annotated[list[StopStr], Field(max_length=MAX_STOP, fail_fast=True)] | None
Prompt = (
    StrictStr
    | Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_PROMPTS, fail_fast=True)]
    | Annotated[list[TokenId], Field(min_length=1, fail_fast=True)]
    | Annotated[
        list[Annotated[list[TokenId], Field(min_length=1, fail_fast=True)]],
        Field(min_length=1, max_length=MAX_PROMPTS, fail_fast=True),
    ]
)


# The JSON a request's body was parsed into, and what _check_json found wrong in it (None:
# nothing), when the server parsed and walked it in a worker thread (load_checked_json, by
# routes.OffLoopJSONRequest): the body's model then does not walk it again on the event
# loop, where 4 MB of small strings took 0.6-0.9 s and ten such bodies at once held every
# other client for 8 s. Set per request (each runs in a task of its own).
checked_body: ContextVar[tuple[Any, str | None] | None] = ContextVar("checked_body", default=None)


class BodyNotJSON(ValueError):
    """A request body that is not UTF-8 JSON; the message says why and where."""


def _no_constant(name: str) -> Any:
    # Python's parser takes NaN and Infinity, which JSON lacks: taken, a NaN temperature was
    # refused as "less than or equal to 2", naming a bound it did not break.
    raise BodyNotJSON(
        f"the request body is not valid JSON: {name} is not a JSON value (JSON numbers are finite)"
    )


def load_checked_json(raw: bytes) -> tuple[Any, str | None]:
    """A body's JSON, and _check_json's complaint about it (None: none). A body that is not
    UTF-8, or not JSON, raises BodyNotJSON."""
    try:
        # JSON between systems is UTF-8 (RFC 8259); json.loads would take UTF-16 and -32 as
        # well, and report a bad UTF-8 byte as no JSON error at all. A leading BOM is taken.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BodyNotJSON(
            f"the request body is not UTF-8 text ({e.reason}: byte 0x{raw[e.start]:02x} at "
            f"offset {e.start}); send JSON encoded as UTF-8"
        ) from e
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise BodyNotJSON(
            f"the request body is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            f" (character {e.pos})"
        ) from e
    try:
        _check_json(data)
    except ValueError as e:
        return data, str(e)
    return data, None


class _Request(BaseModel):
    # Extra fields are kept, so field_audit.py can refuse those it would otherwise drop.
    model_config = ConfigDict(extra="allow")
    # A route's body (set on those classes) walks all of its JSON once, in _valid_json; the
    # models inside it do not walk their parts again: each walking its own would check a
    # body's strings up to four times, 0.5 s on the event loop for a 3.5 MB body of tools.
    _walks_json: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        # OpenAI's optional fields are nullable ("n": null, "stream": null, chat's
        # "logprobs": null, "echo": null) and a null means the default, as leaving the field
        # out does; clients send explicit nulls for fields they do not set.
        if not isinstance(data, dict):
            return data
        defaulted = _null_defaulted(cls)
        if not any(data.get(k, 0) is None for k in defaulted):
            return data
        return {k: v for k, v in data.items() if not (v is None and k in defaulted)}

    # Defined after _null_is_default so that it runs first (pydantic runs a model's
    # before-validators last-defined first): it sees the very object the server parsed.
    @model_validator(mode="before")
    @classmethod
    def _valid_json(cls, data: Any) -> Any:
        # JSON may carry lone surrogates (\ud800); they cannot be tokenized or sent back. And
        # JSON nested hundreds of levels deep (a schema, a tool's parameters, any field)
        # exhausted Python's stack in what walked it recursively (deepcopy, the chat
        # template, this check itself): a 500 instead of a 400.
        if not cls._walks_json:
            return data
        checked = checked_body.get()
        if checked is not None and checked[0] is data:  # walked in a worker thread
            if checked[1] is not None:
                raise ValueError(checked[1])
        else:
            _check_json(data)
        return data


@functools.cache
def _null_defaulted(model: type[BaseModel]) -> frozenset[str]:
    """The keys of ``model``'s fields that have a default but do not take None: a null
    there stands for the default. Fields that take None keep it (``max_tokens: null`` on
    /v1/completions is the rest of the context, as in vLLM)."""
    keys = set()
    for name, f in model.model_fields.items():
        if f.is_required() or f.annotation is Any or f.annotation is type(None):
            continue
        if type(None) in typing.get_args(f.annotation):
            continue
        keys.add(f.alias or name)
    return frozenset(keys)


def _check_json(data: Any) -> None:
    """ValueError for a string that is not valid Unicode, or for nesting deeper than
    MAX_DEPTH; walked without recursion."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not is_unicode(value):
                raise ValueError("strings must be valid Unicode (no lone surrogates)")
        elif isinstance(value, (dict, list)):
            if depth == MAX_DEPTH:
                raise ValueError(f"the request nests JSON more than {MAX_DEPTH} levels deep")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (str, dict, list)))


class StreamOptions(_Request):
    include_usage: StrictBool = False
    # vLLM's: usage in every chunk, and a chunk for every step that made tokens (also when
    # their text is still held back), so a client can time each token.
    continuous_usage_stats: StrictBool = False
    # OpenAI's padding on stream deltas (against reading tokens off packet sizes). Not done
    # here: a client that asks for it must not believe it has it.
    include_obfuscation: StrictBool = False

    @field_validator("include_obfuscation")
    @classmethod
    def _no_obfuscation(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "stream obfuscation (padding on delta events) is not supported by this "
                "server; send stream_options.include_obfuscation false or leave it out"
            )
        return value

    @staticmethod
    def usage_flags(options: StreamOptions | None) -> tuple[bool, bool]:
        """(usage in the final chunk, usage in every chunk) as vLLM reads the options:
        continuous_usage_stats refines include_usage, so without that a stream carries no
        usage at all."""
        if options is None:
            return False, False
        return options.include_usage, options.include_usage and options.continuous_usage_stats


JsonSchema = Annotated[dict[str, Any], Field(max_length=4096)]
TemplateKwargs = Annotated[dict[str, Any], Field(max_length=64)]


class JsonSchemaFormat(_Request):
    """OpenAI's ``response_format.json_schema``."""

    name: StrictStr = Field("response", max_length=64)
    description: StrictStr | None = None
    schema_: JsonSchema | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (
            self.json_schema is None or self.json_schema.schema_ is None
        ):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class StructuredOutputsRequest(_Request):
    """vLLM's ``structured_outputs`` object (set one of json, regex, choice, grammar,
    json_object)."""

    json_: JsonSchema | StrictStr | None = Field(None, alias="json")
    regex: StrictStr | None = None
    choice: (
        Annotated[list[StrictStr], Field(min_length=1, max_length=1024, fail_fast=True)] | None
    ) = None
    grammar: StrictStr | None = None
    json_object: StrictBool | None = None

    @model_validator(mode="after")
    def _nothing_dropped(self) -> StructuredOutputsRequest:
        # vLLM's options that change the output; the rest (backend choice, fallback) have
        # one answer here and are accepted.
        for name in ("whitespace_pattern", "structural_tag"):
            if (self.model_extra or {}).get(name) is not None:
                raise ValueError(f"structured_outputs.{name} is not supported by this server")
        return self


class SamplingFields(_Request):
    """Fields shared by completions and chat (OpenAI's plus vLLM's extras)."""

    _walks_json = True  # its subclasses are routes' bodies

    model: StrictStr | None = None
    n: StrictInt = Field(1, ge=1, le=MAX_N)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    top_k: StrictInt | None = Field(None, ge=-1, le=2**31 - 1)
    min_p: StrictFloat | None = Field(None, ge=0, le=1)
    seed: StrictInt | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    repetition_penalty: StrictFloat | None = Field(None, gt=0, le=10)
    stop: Stop = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=MAX_STOP, fail_fast=True)] | None = (
        None
    )
    min_tokens: StrictInt = Field(0, ge=0)
    ignore_eos: StrictBool = False
    skip_special_tokens: StrictBool = True
    # vLLM's; special tokens are decoded with no spaces between them either way, as vLLM
    # decodes them with a fast tokenizer (SamplingParams takes it likewise).
    spaces_between_special_tokens: StrictBool = True
    include_stop_str_in_output: StrictBool = False
    user: StrictStr | None = Field(None, max_length=256)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # OpenAI's: token id (as a JSON string key) -> bias added to its logit.
    logit_bias: (
        Annotated[
            dict[StrictStr, StrictFloat],
            Field(max_length=MAX_LOGIT_BIAS),
            BeforeValidator(functools.partial(_at_most, MAX_LOGIT_BIAS)),
        ]
        | None
    ) = None
    allowed_token_ids: (
        Annotated[list[TokenId], Field(min_length=1, max_length=1 << 20, fail_fast=True)] | None
    ) = None
    # vLLM's: words never generated (each as written and after a space, as tokens).
    bad_words: Annotated[list[StopStr], Field(max_length=MAX_BAD_WORDS, fail_fast=True)] | None = (
        None
    )
    # vLLM's: each prompt token's logprob, rank and top-k alternatives. This and the
    # routes' logprobs and top_logprobs are bounded by the engine's --max-logprobs, which
    # the routes check (ServerState.check_logprobs): a bound here would be fixed at import.
    # -1 (vLLM's): the whole vocabulary, where --max-logprobs allows it.
    prompt_logprobs: StrictInt | None = Field(None, ge=-1)
    # Structured outputs: OpenAI's response_format, vLLM's structured_outputs and its older
    # guided_* fields (one of them per request).
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsRequest | None = None
    guided_json: JsonSchema | StrictStr | None = None
    guided_regex: StrictStr | None = None
    guided_choice: (
        Annotated[list[StrictStr], Field(min_length=1, max_length=1024, fail_fast=True)] | None
    ) = None
    guided_grammar: StrictStr | None = None
    # vLLM picks among grammar engines with it; this server has one (llguidance).
    guided_decoding_backend: StrictStr | None = None
    # vLLM's: only requests with the same salt share prefix-cache blocks.
    cache_salt: StrictStr | None = Field(None, min_length=1, max_length=256)
    # vLLM's: lower is served sooner under --scheduling-policy priority; under fcfs only 0
    # is taken (ServerState.check_priority).
    priority: StrictInt = Field(0, ge=-(2**63), le=2**63 - 1)
    # vLLM's: the caller's id, which the response's id carries (request_ids.response_id).
    request_id: StrictStr | None = Field(None, min_length=1, max_length=256)


def _truncation(value: int | None) -> int | None:
    # SamplingParams' rule, checked here so the 400 comes before any prompt is tokenized.
    if value is not None and not keeps_prompt_tail(value):
        raise ValueError(
            "truncate_prompt_tokens must be an integer >= 1 (keep the prompt's last k tokens) "
            "or -1 (keep as many as the context takes with room for one generated token)"
        )
    return value


# vLLM's: keep only the prompt's last k tokens (left truncation), before its length is
# checked against the context. A field of completions and chat; /v1/responses has its own
# ``truncation`` and refuses this one (field_audit.RESPONSES_UNSUPPORTED).
TruncatePromptTokens = Annotated[StrictInt | None, AfterValidator(_truncation)]


class CompletionRequest(SamplingFields):
    prompt: Prompt
    truncate_prompt_tokens: TruncatePromptTokens = None
    max_tokens: StrictInt | None = Field(16, ge=0)  # 0: score the prompt (with echo)
    echo: StrictBool = False
    # vLLM's: whether the tokenizer adds its special tokens (BOS) to a text prompt.
    add_special_tokens: StrictBool = True
    logprobs: StrictInt | None = Field(None, ge=-1)
    # vLLM's: logprobs name each token "token_id:<id>" instead of its text (unset: the
    # server's --return-tokens-as-token-ids).
    return_tokens_as_token_ids: StrictBool | None = None
    suffix: StrictStr | None = None
    best_of: StrictInt | None = Field(None, ge=1, le=MAX_N)
    # vLLM's: each choice also carries its prompt's and its output's token ids (the only
    # way to read the output of a server started with --skip-tokenizer-init, whose text is
    # empty).
    return_token_ids: StrictBool | None = None


class ContentPart(_Request):
    """A part of a message's content; only text parts are taken, and an assistant's
    ``refusal`` parts (OpenAI's assistant messages may carry them, sent back as they came)."""

    type: StrictStr
    text: StrictStr | None = None
    refusal: StrictStr | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type == "refusal":
            if self.refusal is None:
                raise ValueError("a refusal content part needs 'refusal'")
            return self
        if self.type != "text":
            raise ValueError(
                f"content parts of type {self.type!r} are not supported: this model takes text only"
            )
        if self.text is None:
            raise ValueError("a text content part needs 'text'")
        return self

    def value(self) -> str:
        """The part's text (a refusal's, for a refusal part)."""
        return (self.refusal if self.type == "refusal" else self.text) or ""


class FunctionCall(_Request):
    name: Annotated[StrictStr, Field(max_length=256)]
    arguments: StrictStr  # a JSON object, as text


class ToolCallRequest(_Request):
    """A tool call of an earlier assistant message, sent back by the client."""

    id: Annotated[StrictStr, Field(max_length=256)] = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        StrictStr | Annotated[list[ContentPart], Field(max_length=256, fail_fast=True)] | None
    ) = None
    name: StrictStr | None = Field(None, max_length=256)
    tool_calls: Annotated[list[ToolCallRequest], Field(max_length=128, fail_fast=True)] | None = (
        None
    )
    tool_call_id: StrictStr | None = Field(None, max_length=256)
    # vLLM's: an assistant turn's reasoning, sent back for templates that show it in the
    # history (``reasoning_content`` is its older name); other roles' is not rendered.
    reasoning: StrictStr | None = None
    reasoning_content: StrictStr | None = None

    @model_validator(mode="after")
    def _no_function_call(self) -> ChatMessage:
        if (self.model_extra or {}).get("function_call"):
            raise ValueError(
                "messages with function_call (OpenAI's deprecated form) are not supported; "
                "send tool_calls"
            )
        return self

    @model_validator(mode="after")
    def _refusals_are_the_assistants(self) -> ChatMessage:
        # As OpenAI's: only an assistant message (the model's own) can carry a refusal.
        parts = self.content if isinstance(self.content, list) else []
        if self.role != "assistant" and any(p.type == "refusal" for p in parts):
            raise ValueError(f"a {self.role} message cannot carry refusal content parts")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return parts_text(p.value() for p in self.content)


Messages = Annotated[
    list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES, fail_fast=True)
]
# vLLM's documents: retrieved passages (e.g. {"title": ..., "text": ...}) for the chat
# template's ``documents`` (RAG templates: Command-R's, Granite's).
Documents = Annotated[
    list[Annotated[dict[StrictStr, StrictStr], Field(max_length=64)]],
    Field(max_length=MAX_MESSAGES, fail_fast=True),
]


class FunctionDefinition(_Request):
    name: Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")]
    description: StrictStr | None = Field(None, max_length=8192)
    parameters: JsonSchema | None = None
    strict: StrictBool | None = None


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Request):
    name: StrictStr


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatCompletionRequest(SamplingFields):
    messages: Messages
    tools: Annotated[list[Tool], Field(max_length=128, fail_fast=True)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=-1)
    # vLLM's: logprobs name each token "token_id:<id>" instead of its text (unset: the
    # server's --return-tokens-as-token-ids).
    return_tokens_as_token_ids: StrictBool | None = None
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    # vLLM's: a reply that continues the last message begins with that message's content.
    echo: StrictBool = False
    # vLLM's: add the tokenizer's special tokens on top of what the template writes.
    add_special_tokens: StrictBool = False
    # vLLM's: extra variables for the chat template (e.g. Qwen3's enable_thinking).
    chat_template_kwargs: TemplateKwargs | None = None
    # OpenAI's: the template's reasoning_effort variable and enable_thinking switch, where it
    # reads them (with_effort); chat_template_kwargs' reasoning_effort may not say otherwise.
    reasoning_effort: ReasoningEffort | None = None
    documents: Documents | None = None
    truncate_prompt_tokens: TruncatePromptTokens = None
    # vLLM's: whether the reasoning parser's output (--reasoning-parser) is returned; false
    # leaves the reasoning out of the response (it is never in the content). Without a
    # parser it changes nothing: a reasoning model's thinking stays in the content, as in
    # vLLM without one.
    include_reasoning: StrictBool = True

    @model_validator(mode="after")
    def _continue_or_generation_prompt(self) -> ChatCompletionRequest:
        _one_of_continue_and_prompt(self)
        return self


def _one_of_continue_and_prompt(req: ChatCompletionRequest | TokenizeChatRequest) -> None:
    """As vLLM: a continued final message takes no generation prompt, so asking for both is
    the client's error. add_generation_prompt's default (true) gives way to it unasked."""
    if (
        req.continue_final_message
        and req.add_generation_prompt
        and "add_generation_prompt" in req.model_fields_set
    ):
        raise ValueError(
            "continue_final_message and add_generation_prompt cannot both be true: "
            "a continued final message takes no generation prompt"
        )


class TokenizeCompletionRequest(_Request):
    _walks_json = True  # a route's body
    model: StrictStr | None = None
    prompt: StrictStr
    add_special_tokens: StrictBool = True
    # vLLM's: also answer with each token's string (the tokenizer's own, as
    # convert_ids_to_tokens gives it).
    return_token_strs: StrictBool | None = False


class TokenizeChatRequest(_Request):
    """The prompt a chat request would send: the same messages, tools and template flags
    give the same token ids (and count) as /v1/chat/completions prompts the model with."""

    _walks_json = True  # a route's body

    model: StrictStr | None = None
    messages: Messages
    tools: Annotated[list[Tool], Field(max_length=128, fail_fast=True)] | None = None
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    add_special_tokens: StrictBool = False
    chat_template_kwargs: TemplateKwargs | None = None
    # As chat's: it changes the prompt, so the count is of the prompt chat would send.
    reasoning_effort: ReasoningEffort | None = None
    documents: Documents | None = None
    return_token_strs: StrictBool | None = False

    @model_validator(mode="after")
    def _continue_or_generation_prompt(self) -> TokenizeChatRequest:
        _one_of_continue_and_prompt(self)
        return self


TokenizeRequest = TokenizeCompletionRequest | TokenizeChatRequest


class DetokenizeRequest(_Request):
    _walks_json = True  # a route's body
    model: StrictStr | None = None
    tokens: Annotated[list[TokenId], Field(max_length=1_000_000, fail_fast=True)]


# -- responses ------------------------------------------------------------------------------
class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionLogprobs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class PromptLogprob(BaseModel):
    logprob: float
    rank: int
    decoded_token: str


# vLLM's prompt_logprobs: per prompt position (None at the first), token id (a JSON string
# key) -> its logprob; the prompt token and its top alternatives.
PromptLogprobs = list[dict[str, PromptLogprob] | None]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: PromptLogprobs | None = None
    # vLLM's, with return_token_ids.
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None  # OpenAI's; null here, as vLLM sends it


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatResponseMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None  # OpenAI's, always present; this server never refuses
    tool_calls: list[ToolCallOut] = Field(default_factory=list)
    # vLLM's, with --reasoning-parser: the model's thinking. Sent only where set: without a
    # parser (or with include_reasoning false) the message has no such field.
    reasoning: str | None = None

    @model_serializer(mode="wrap")
    def _reasoning_where_set(self, handler: Any) -> Any:
        data = handler(self)
        if "reasoning" not in self.model_fields_set:
            data.pop("reasoning", None)
        return data


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo | None = None
    # OpenAI's; null here, as vLLM sends them (no backend fingerprint, one service tier).
    system_fingerprint: str | None = None
    service_tier: str | None = None
    # vLLM's: on the response, not on a choice (the choices share the prompt).
    prompt_logprobs: PromptLogprobs | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sarathi"
    root: str | None = None
    max_model_len: int | None = None
    description: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    prompt: str


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
