"""Tool calling: OpenAI's ``tools`` and ``tool_choice`` over the chat template, structured
outputs and the output parsers of tool_parsers.py.

    none       tools are still rendered by the template (as vLLM does); the output is content
    auto       the model decides, in the format its template taught it; that is parsed.
               With a strict tool, a call it starts is constrained to a call of the
               tools in that format (tool_grammars.py), strict tools' arguments to
               their schemas
    required   the output is constrained to a JSON list of {"name": ..., "parameters": ...}
               calls of the offered tools, each call's parameters to its tool's schema
    named      the output is constrained to the named tool's parameters schema

With ``parallel_tool_calls: false`` a required output holds one call, and in auto only the
first call the model wrote is returned.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sarathi.entrypoints.openai_server.errors import bad_request
from sarathi.entrypoints.openai_server.protocol import (
    ChatCompletionRequest,
    FunctionCallOut,
    NamedToolChoice,
    TokenizeChatRequest,
    ToolCallOut,
)
from sarathi.entrypoints.openai_server.tool_grammars import (
    FORMAT_TAGS,
    ToolSchema,
    strict_auto_grammar,
)
from sarathi.entrypoints.openai_server.tool_parsers import (
    StreamingToolParser,
    arguments_text,
    parse,
    parse_pieces,
)
from sarathi.sampling_params import StructuredOutputsParams

ToolKind = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolMode:
    kind: ToolKind
    names: frozenset[str] = frozenset()
    parser: str | None = None  # auto: the output format
    function: str | None = None  # named: the tool
    parallel: bool = True
    strict: bool = False  # auto: some tool is strict, so the calls are constrained

    @property
    def calls_tools(self) -> bool:
        return self.kind != "none"

    @property
    def keeps_special_tokens(self) -> bool:
        """Whether the output's special tokens must stay in its text for the parser: some
        Hermes-format models (Hermes 2 Pro) make ``<tool_call>`` and ``</tool_call>``
        special tokens, and skipped, the calls reach the parser as bare JSON and come back
        as content. vLLM's hermes parser turns skip_special_tokens off likewise."""
        return self.kind == "auto" and self.parser == "hermes"

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags of the output format that its constraint names (none when the output
        is not constrained by the format)."""
        return FORMAT_TAGS[self.parser] if self.strict and self.parser is not None else ()


NO_TOOLS = ToolMode("none")


def tool_mode(req: ChatCompletionRequest, parser: str | None) -> ToolMode:
    """How the request uses its tools; 400 for a choice that cannot be honoured.
    ``parser``: the server's tool-call format (None when the template shows none)."""
    tools = req.tools or []
    choice = req.tool_choice or ("auto" if tools else "none")
    if choice == "none":
        return NO_TOOLS
    if not tools:
        raise bad_request("tool_choice needs tools", "tool_choice")
    names = frozenset(t.function.name for t in tools)
    if len(names) != len(tools):
        raise bad_request("tools must have distinct names", "tools")
    parallel = req.parallel_tool_calls is not False
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise bad_request(
                f"tool_choice names {choice.function.name!r}, which is not among the tools",
                "tool_choice",
            )
        return ToolMode("named", names, function=choice.function.name, parallel=parallel)
    if choice == "required":
        return ToolMode("required", names, parallel=parallel)
    if parser is None:
        raise bad_request(
            'tool_choice "auto" needs the model\'s tool-call format, which its chat template '
            "does not show; start the server with --tool-call-parser, or send tool_choice "
            '"required" or a named function',
            "tool_choice",
        )
    strict = any(t.function.strict is True for t in tools)
    return ToolMode("auto", names, parser=parser, parallel=parallel, strict=strict)


def tool_constraint(
    req: ChatCompletionRequest, mode: ToolMode, special: Mapping[str, int]
) -> StructuredOutputsParams | None:
    """The output constraint of a required or named choice, or of auto with a strict tool
    (None otherwise). ``special``: those of ``mode.tags`` that the vocabulary holds as
    special tokens, with their ids."""
    if mode.kind == "auto" and mode.strict:
        assert mode.parser is not None
        tools = [
            ToolSchema(
                t.function.name,
                t.function.parameters or {"type": "object"},
                bool(t.function.strict),
            )
            for t in req.tools or []
        ]
        try:
            grammar = strict_auto_grammar(mode.parser, tools, mode.parallel, special)
        except ValueError as e:
            raise bad_request(str(e), "tools") from e
        return StructuredOutputsParams(grammar=grammar)
    if mode.kind not in ("required", "named"):
        return None
    schemas = {
        t.function.name: t.function.parameters or {"type": "object"} for t in req.tools or []
    }
    if mode.kind == "named":
        assert mode.function is not None
        return StructuredOutputsParams(json=schemas[mode.function])
    # Each tool's schema is placed under $defs of the list's schema, its local references
    # (``#``, ``#/$defs/Inner``: what Pydantic writes for nested models and enums) following it.
    defs = {
        f"tool_{i}": _rebased(schema, f"/$defs/tool_{i}")
        for i, schema in enumerate(schemas.values())
    }
    call = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "parameters": {"$ref": f"#/$defs/tool_{i}"}},
            "required": ["name", "parameters"],
        }
        for i, name in enumerate(schemas)
    ]
    array: dict[str, Any] = {
        "$defs": defs,
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": call},
    }
    if not mode.parallel:
        array["maxItems"] = 1
    return StructuredOutputsParams(json=array)


# Keywords whose values are JSON data, not schemas (a "$ref" there is not a reference), and
# those whose values map names to schemas (a key there is a name, not a keyword).
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _rebased(schema: Any, base: str) -> Any:
    """A copy of ``schema`` for the place ``base`` (a JSON pointer) in a larger schema: its
    references to its own root and parts (``#``, ``#/...``) are prefixed with ``base``, so
    they still resolve. A schema with its own ``$id`` is its own resource: its references
    resolve against it wherever it is, and it is left as it is."""
    schema = copy.deepcopy(schema)
    if not isinstance(schema, dict) or "$id" in schema:
        return schema
    stack: list[Any] = [schema]
    while stack:  # not recursive: a deeply nested schema must not exhaust the stack
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            node["$ref"] = "#" + base + ref[1:]
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                stack.extend(value.values())
            elif key not in _DATA_KEYWORDS:
                stack.append(value)
    return schema


def template_tools(req: ChatCompletionRequest | TokenizeChatRequest) -> list[dict[str, Any]] | None:
    """The tools as chat templates take them (JSON-schema function descriptions)."""
    if not req.tools:
        return None
    return [t.model_dump(exclude_none=True, by_alias=True) for t in req.tools]


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(name: str, arguments: str, call_id: str | None = None) -> ToolCallOut:
    return ToolCallOut(
        id=call_id or _new_id(), function=FunctionCallOut(name=name, arguments=arguments)
    )


@dataclass
class ToolMessage:
    content: str | None
    tool_calls: list[ToolCallOut]
    finish_reason: str | None


def tool_message(mode: ToolMode, text: str, finish_reason: str | None) -> ToolMessage:
    """The assistant message of a finished output. A forced (named) call is a call however
    its output ended; any other output that is not a complete call (it ran out of tokens)
    stays content, so nothing the model wrote is lost."""
    if mode.kind == "none":
        return ToolMessage(text, [], finish_reason)
    if mode.kind == "named":
        # As OpenAI and vLLM: the call carries whatever arguments were written, also when
        # max_tokens ("length") or a stop string ("stop") cut them short, as a stream sends
        # them; OpenAI ends a forced call with "stop".
        assert mode.function is not None
        return ToolMessage(None, [_call(mode.function, text)], finish_reason)
    if mode.kind == "required":
        calls = _required_calls(text) if finish_reason == "stop" else None
        if calls is None:
            return ToolMessage(text, [], finish_reason)
        return ToolMessage(None, calls, "tool_calls")
    assert mode.parser is not None
    parsed = parse(mode.parser, text, set(mode.names))
    calls = [_call(c.name, c.arguments, c.id) for c in parsed.tool_calls]
    if not mode.parallel:
        calls = calls[:1]
    return ToolMessage(parsed.content, calls, "tool_calls" if calls else finish_reason)


def tool_items(mode: ToolMode, text: str, finish_reason: str | None) -> list[str | ToolCallOut]:
    """A finished output's text and calls in the order the model wrote them, as the
    Responses API tells them (an output item each). In auto each run of text between two
    calls is one item, stripped, and left out when that leaves nothing: what a stream of
    ``ToolStream`` deltas holds between its calls, once a run's first delta is left-stripped
    (the stream strips only the whole content's ends). A call dropped by
    ``parallel_tool_calls: false`` joins the text on either side, as the stream sends it.
    In the other modes: ``tool_message``'s content (when there is any, or nothing else),
    then its calls."""
    if mode.kind != "auto":
        msg = tool_message(mode, text, finish_reason)
        content = [msg.content or ""] if msg.content or not msg.tool_calls else []
        return [*content, *msg.tool_calls]
    assert mode.parser is not None
    items: list[str | ToolCallOut] = []
    run = ""  # the text since the last call kept
    for piece in parse_pieces(mode.parser, text, set(mode.names)):
        if isinstance(piece, str):
            run += piece
        elif mode.parallel or not any(not isinstance(i, str) for i in items):
            if run.strip():
                items.append(run.strip())
            run = ""
            items.append(_call(piece.name, piece.arguments, piece.id))
    if run.strip() or not items:
        items.append(run.strip())
    return items


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _required_calls(text: str) -> list[ToolCallOut] | None:
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return None
    return [_call(item["name"], arguments_text(item["parameters"])) for item in items]


@dataclass
class ToolStream:
    """The streamed deltas of one choice's message: ``feed`` each text delta, ``finish``
    once with the output's finish reason. Deltas are OpenAI ``choices[i].delta`` objects."""

    mode: ToolMode
    _parser: StreamingToolParser | None = None
    _text: list[str] = field(default_factory=list)
    _started: bool = False

    def __post_init__(self) -> None:
        if self.mode.kind == "auto":
            assert self.mode.parser is not None
            self._parser = StreamingToolParser(self.mode.parser, set(self.mode.names))

    def feed(self, delta: str) -> list[dict[str, Any]]:
        kind = self.mode.kind
        if kind == "none":
            return [{"content": delta}] if delta else []
        if kind == "named":
            out = []
            if not self._started:
                self._started = True
                first = {"index": 0, "id": _new_id(), "type": "function"}
                out.append(
                    {
                        "tool_calls": [
                            {**first, "function": {"name": self.mode.function, "arguments": ""}}
                        ]
                    }
                )
            if delta:
                out.append({"tool_calls": [{"index": 0, "function": {"arguments": delta}}]})
            return out
        if kind == "required":
            self._text.append(delta)  # sent whole once it parses
            return []
        assert self._parser is not None
        return [d.to_openai() for d in self._parser.feed(delta) if self._keep(d.index, d.content)]

    def finish(self, finish_reason: str | None) -> tuple[list[dict[str, Any]], str | None]:
        kind = self.mode.kind
        if kind == "required":
            text = "".join(self._text)
            calls = _required_calls(text) if finish_reason == "stop" else None
            if calls is None:
                return ([{"content": text}] if text else []), finish_reason
            deltas = [{"tool_calls": [{"index": i, **c.model_dump()}]} for i, c in enumerate(calls)]
            return deltas, "tool_calls"
        if kind != "auto":
            return [], finish_reason
        assert self._parser is not None
        deltas = [d.to_openai() for d in self._parser.finish() if self._keep(d.index, d.content)]
        return deltas, "tool_calls" if self._parser.num_tool_calls else finish_reason

    def _keep(self, index: int, content: str | None) -> bool:
        return content is not None or self.mode.parallel or index == 0
