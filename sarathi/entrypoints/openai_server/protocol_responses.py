"""Request and response bodies of POST /v1/responses: OpenAI's Responses API, the subset
served here (pydantic models, matching openai-python's ``types/responses`` field by field).

A request is a chat request under other names: ``input`` (a string, or messages and
function-call items) for ``messages``, ``instructions`` for a first system message,
``max_output_tokens`` for ``max_tokens``, ``text.format`` for ``response_format``, and flat
function tools. It takes the sampling fields of the other routes (vLLM's extras included).
Input items and tools this server cannot honour (images, files, reasoning items, built-in
tools) are refused here by type, so the 400 names ``input`` or ``tools``.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from sarathi.entrypoints.openai_server.protocol import (
    MAX_MESSAGES,
    JsonSchema,
    SamplingFields,
    TemplateKwargs,
    _at_most,
    _Request,
)
from sarathi.transformers_utils.chat import ReasoningEffort, parts_text

# A call's items and its instructions become chat messages, at most MAX_MESSAGES of them.
MAX_INPUT_ITEMS = MAX_MESSAGES - 1
MAX_TOOLS = 128

_TEXT_PARTS = ("input_text", "output_text")
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


class ContentPart(_Request):
    """A text part of an input message (``input_text``; an assistant's ``output_text`` or
    ``refusal`` when a client sends earlier output back). Annotations, logprobs and cache
    breakpoints a part carries are accepted and have no effect."""

    type: StrictStr
    text: StrictStr | None = None
    refusal: StrictStr | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        _check_part_type(self.type)
        if self.type == "refusal" and self.refusal is None:
            raise ValueError("a refusal content part needs 'refusal'")
        if self.type != "refusal" and self.text is None:
            raise ValueError(f"an {self.type} content part needs 'text'")
        return self

    def value(self) -> str:
        return (self.refusal if self.type == "refusal" else self.text) or ""


Content = StrictStr | Annotated[list[ContentPart], Field(max_length=256, fail_fast=True)]


def _text(content: Content) -> str:
    return content if isinstance(content, str) else parts_text(p.value() for p in content)


class InputMessage(_Request):
    """OpenAI's EasyInputMessage, input message and output message (``id``, ``status`` and
    ``phase`` are accepted and have no effect)."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Content

    def text(self) -> str:
        return _text(self.content)


class FunctionCallInput(_Request):
    """A function call of an earlier response, sent back by the client."""

    type: Literal["function_call"]
    call_id: Annotated[StrictStr, Field(max_length=256)]
    name: Annotated[StrictStr, Field(max_length=256)]
    arguments: StrictStr  # a JSON object, as text


class FunctionCallOutputInput(_Request):
    """The client's result of a function call, for the call with ``call_id``."""

    type: Literal["function_call_output"]
    call_id: Annotated[StrictStr, Field(max_length=256)]
    output: Content

    def text(self) -> str:
        return _text(self.output)


class ReasoningText(_Request):
    type: Literal["reasoning_text", "summary_text"]
    text: StrictStr


class ReasoningInput(_Request):
    """A ``reasoning`` item of an earlier response, sent back: its text reaches the chat
    template as the next assistant message's ``reasoning`` (templates that show earlier
    turns' thinking render it; others leave it out)."""

    type: Literal["reasoning"]
    id: StrictStr | None = None
    summary: list[ReasoningText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    # OpenAI's, for its own models; this server makes none and reads none.
    encrypted_content: StrictStr | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    def text(self) -> str:
        return "\n".join(p.text for p in self.content or ())


# An item's model by its type. The tags are the models' names: pydantic puts the tag in an
# error's location, and errors.py leaves a class name out of the param it reports, so a
# missing field is "input.0.content", not "input.0.message.content" (no such key).
_ITEM_TAGS = {
    "message": "InputMessage",
    "function_call": "FunctionCallInput",
    "function_call_output": "FunctionCallOutputInput",
    "reasoning": "ReasoningInput",
}


def _item_type(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("type", "message")
    else:
        kind = getattr(value, "type", "message")
    return _ITEM_TAGS.get(kind, kind) if isinstance(kind, str) else kind


InputItem = Annotated[
    (
        Annotated[InputMessage, Tag("InputMessage")]
        | Annotated[FunctionCallInput, Tag("FunctionCallInput")]
        | Annotated[FunctionCallOutputInput, Tag("FunctionCallOutputInput")]
        | Annotated[ReasoningInput, Tag("ReasoningInput")]
    ),
    Discriminator(_item_type),
]


def _check_part_type(kind: Any) -> None:
    if kind not in (*_TEXT_PARTS, "refusal"):
        raise ValueError(
            f"content parts of type {kind!r} are not supported: this model takes text only"
        )


def _check_parts(content: Any) -> None:
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                _check_part_type(part.get("type"))


def _check_item(item: Any) -> None:
    """Refuse, by type, what the item models would only call malformed."""
    if not isinstance(item, dict):
        return  # the models' own errors say what is wrong
    kind = item.get("type", "message")
    if kind == "item_reference":
        raise ValueError(
            "input items of type 'item_reference' are not supported: send the items "
            "themselves, or continue a stored response with previous_response_id"
        )
    if kind not in _ITEM_TYPES:
        raise ValueError(
            f"input items of type {kind!r} are not supported by this server: it takes "
            "messages, function_call, function_call_output and reasoning items"
        )
    _check_parts(item.get("content") if kind == "message" else item.get("output"))
    if kind == "function_call" and item.get("namespace") is not None:
        raise ValueError("function calls in a namespace are not supported (no namespace tools)")


class FunctionTool(_Request):
    """A Responses function tool: flat, ``{"type": "function", "name", "description",
    "parameters", "strict"}``."""

    type: Literal["function"]
    name: Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")]
    description: StrictStr | None = Field(None, max_length=8192)
    parameters: JsonSchema | None = None
    strict: StrictBool | None = None

    @model_validator(mode="after")
    def _nothing_dropped(self) -> FunctionTool:
        extra = self.model_extra or {}
        for name in ("defer_loading", "async"):
            if extra.get(name):
                raise ValueError(f"function tools with {name} are not supported")
        if extra.get("allowed_callers") not in (None, [], ["direct"]):
            raise ValueError("function tools with programmatic callers are not supported")
        return self


class FunctionToolChoice(_Request):
    type: Literal["function"]
    name: StrictStr


ToolChoice = Literal["none", "auto", "required"] | FunctionToolChoice


class TextFormat(_Request):
    """``text.format``: plain text, any JSON object, or a JSON schema (OpenAI's
    ResponseFormatTextConfig; the schema's fields sit beside ``type``)."""

    type: Literal["text", "json_object", "json_schema"]
    name: StrictStr | None = Field(None, max_length=64)
    description: StrictStr | None = None
    schema_: JsonSchema | None = Field(None, alias="schema")
    strict: StrictBool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("text.format of type json_schema needs schema")
        return self


class TextConfig(_Request):
    format: TextFormat | None = None
    verbosity: Any = None  # refused when set

    @field_validator("verbosity")
    @classmethod
    def _no_verbosity(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("verbosity is not supported by this server")
        return value


_SUMMARY = Literal["auto", "concise", "detailed"]


class Reasoning(_Request):
    """``reasoning``: OpenAI's Reasoning, validated as its SDK types it and echoed back as
    sent. The effort renders as chat's ``reasoning_effort`` does (``with_effort``: the chat
    template's ``reasoning_effort`` variable and ``enable_thinking`` switch, where the
    template reads them; a 400 where it reads neither, but "none"). No summaries are
    written, so a summary or a mode other than standard is refused; ``context`` (which
    reasoning items later turns see) is taken."""

    effort: ReasoningEffort | None = None
    summary: _SUMMARY | None = None
    generate_summary: _SUMMARY | None = None  # summary's deprecated name
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    mode: StrictStr | None = Field(None, max_length=64)

    @field_validator("summary", "generate_summary")
    @classmethod
    def _no_summary(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "reasoning summaries are not supported: with --reasoning-parser the "
                "reasoning comes whole, as a reasoning item"
            )
        return value

    @field_validator("mode")
    @classmethod
    def _standard_mode(cls, value: str | None) -> str | None:
        if value not in (None, "standard"):
            raise ValueError(f"a reasoning mode of {value!r} is not supported")
        return value

    @model_validator(mode="after")
    def _nothing_dropped(self) -> Reasoning:
        for name, value in (self.model_extra or {}).items():
            if value is not None:
                raise ValueError(f"reasoning.{name} is not supported")
        return self

    def echo(self) -> dict[str, Any]:
        """As OpenAI echoes it: effort and summary always, the others where sent."""
        out: dict[str, Any] = {"effort": self.effort, "summary": self.summary}
        out.update((k, v) for k in ("context", "mode") if (v := getattr(self, k)) is not None)
        return out


class ResponsesRequest(SamplingFields):
    """POST /v1/responses. The fields of the Responses API this server refuses or takes
    without effect are in field_audit.py (``RESPONSES_UNSUPPORTED``); a few chat fields
    inherited with the sampling fields have no meaning here and are refused by the route
    (``n`` other than 1, ``response_format``, ``prompt_logprobs``)."""

    input: (
        StrictStr
        | Annotated[
            list[InputItem], Field(min_length=1, max_length=MAX_INPUT_ITEMS, fail_fast=True)
        ]
    )
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1)
    text: TextConfig | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS, fail_fast=True)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    reasoning: Reasoning | None = None
    # vLLM's, as on /v1/chat/completions: extra variables for the chat template.
    chat_template_kwargs: TemplateKwargs | None = None
    # Returns at once (status "queued"); the response is read back by GET. Needs the store.
    background: StrictBool | None = None
    # OpenAI's default is to store (store left out: stored, where the server has a store).
    store: StrictBool | None = None
    previous_response_id: StrictStr | None = Field(None, max_length=256)
    # vLLM's: add the tokenizer's special tokens on top of what the chat template writes.
    add_special_tokens: StrictBool = False
    # Bounds calls of built-in tools, of which none are run here: taken, and echoed back.
    max_tool_calls: StrictInt | None = Field(None, ge=1)
    # Bookkeeping: taken, and echoed back. The prefix cache needs no key (it matches
    # prompts by content; cache_salt isolates), and there is no abuse monitoring here.
    prompt_cache_key: StrictStr | None = Field(None, max_length=256)
    # How long OpenAI keeps a prompt's cache ("in_memory", "24h"); here blocks stay cached
    # until evicted. A string, so a value a newer API adds is taken too.
    prompt_cache_retention: StrictStr | None = Field(None, max_length=64)
    safety_identifier: StrictStr | None = Field(None, max_length=256)
    metadata: (
        Annotated[
            dict[
                Annotated[StrictStr, Field(max_length=64)],
                Annotated[StrictStr, Field(max_length=512)],
            ],
            Field(max_length=16),
            BeforeValidator(functools.partial(_at_most, 16)),
        ]
        | None
    ) = None

    @model_validator(mode="before")
    @classmethod
    def _not_chat_shaped(cls, data: Any) -> Any:
        # A chat completions body sent here: "input: Field required" would not say why.
        if isinstance(data, dict) and "messages" in data and "input" not in data:
            raise ValueError(
                "messages is chat completions' field; a response takes input (a string, or a "
                "list of message and function-call items): rename 'messages' to 'input'"
            )
        return data

    @field_validator("input", mode="before")
    @classmethod
    def _known_items(cls, value: Any) -> Any:
        if isinstance(value, list):
            for item in value:
                _check_item(item)
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools_only(cls, value: Any) -> Any:
        for tool in value if isinstance(value, list) else []:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind != "function":
                raise ValueError(
                    f"tools of type {kind!r} are not supported: this server runs no built-in "
                    "tools (web search, file search, code interpreter, MCP, ...); send "
                    "function tools"
                )
        return value

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _function_choice_only(cls, value: Any) -> Any:
        kind = value.get("type") if isinstance(value, dict) else None
        if isinstance(kind, str) and kind != "function":
            raise ValueError(
                f"tool_choice of type {kind!r} is not supported: send none, auto, required or "
                '{"type": "function", "name": ...}'
            )
        return value


# -- responses ------------------------------------------------------------------------------
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class FunctionCallOutput(BaseModel):
    """A ``function_call`` output item: ``call_id`` is what the client's
    ``function_call_output`` refers to."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningContent(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningOutput(BaseModel):
    """A ``reasoning`` output item (--reasoning-parser): the model's thinking, before the
    answer's items. No summaries are made (``summary`` is empty), as vLLM's."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningContent]
    encrypted_content: None = None
    status: ItemStatus


OutputItem = OutputMessage | FunctionCallOutput | ReasoningOutput


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = "max_output_tokens"


class ResponseErrorInfo(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """OpenAI's ``Response``. The request's settings are echoed as they took effect
    (``temperature`` and ``top_p``: the values sampled with)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    completed_at: int | None = None
    error: ResponseErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None  # the request's, as sent (Reasoning.echo)
    background: bool = False
    store: bool = False
    service_tier: str = "default"
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "none"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int = 0
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
