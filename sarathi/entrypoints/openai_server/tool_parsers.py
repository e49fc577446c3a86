"""Finding tool calls in a chat model's generated text (OpenAI ``tool_choice: "auto"``).

With tool calling on "auto" the model decides by itself whether to answer or to call, and writes
the calls as plain text in a format it was trained on; this module turns that text back into the
``content`` and ``tool_calls`` of an OpenAI message. Two formats, each a named parser:

``hermes`` (Qwen2.5, Qwen3, Hermes): any number of blocks, anywhere in the text::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

  The text outside the blocks is the content (Qwen3's ``<think>...</think>`` stays in it).
  A block may name the arguments "parameters" instead.

``llama3_json`` (Llama 3.1/3.2/3.3): the whole output, after optional leading whitespace and an
  optional ``<|python_tag|>``, is one object ``{"name": ..., "parameters": {...}}`` ("arguments"
  is accepted too), or several separated by ``;``. Output that does not start with ``{`` there is
  an ordinary answer. The format has no end marker, so a call is only known once the output ends.

Nothing the model wrote is lost: a block or output that is not a well-formed call of a known tool
(invalid JSON, no name, a name outside ``tool_names``, an unterminated ``<tool_call>``) stays in
the content as text. The content is the text outside the calls with surrounding whitespace
stripped, or None when that leaves nothing.

Streaming (``StreamingToolParser``) gives the same result for any split of the text into deltas:
the content deltas concatenated equal the non-streaming ``content`` exactly (``""`` for None, in
which case no content delta is sent), and the calls are the same, in the same order (ids differ).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sarathi.sampling_params import is_unicode

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
# Deeply nested model output overflows the decoder's recursion: that is malformed text too.
_BAD_JSON = (json.JSONDecodeError, RecursionError)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str
    """The arguments object as JSON text, as OpenAI sends it (re-serialized, so always valid)."""


@dataclass
class ParsedOutput:
    content: str | None
    tool_calls: list[ToolCall]


@dataclass
class StreamDelta:
    """One piece of a streamed message: content text when ``content`` is set, else a fragment
    of tool call ``index``, whose ``id`` and ``name`` come only in the call's first fragment
    (OpenAI clients concatenate the ``arguments`` fragments of an index)."""

    content: str | None = None
    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        """The ``choices[i].delta`` object of a chat completion chunk."""
        if self.content is not None:
            return {"content": self.content}
        call: dict[str, Any] = {"index": self.index}
        function: dict[str, Any] = {}
        if self.id is not None:
            call["id"] = self.id
            call["type"] = "function"
        if self.name is not None:
            function["name"] = self.name
        function["arguments"] = self.arguments
        call["function"] = function
        return {"tool_calls": [call]}


# A parser reads the text into pieces: content text, and calls, in the order they were written.
# Keeping the pieces (not yet a ParsedOutput) lets streaming and non-streaming share what follows.
_Piece = str | ToolCall


class _Scanner(Protocol):
    """The incremental reading of one format: ``feed`` returns the pieces that can no longer
    change, holding back text whose meaning depends on what comes next."""

    def feed(self, delta: str) -> list[_Piece]: ...

    def finish(self) -> list[_Piece]: ...


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _make_call(
    obj: object, arg_keys: tuple[str, ...], tool_names: set[str] | None, args_required: bool
) -> ToolCall | None:
    """The call ``obj`` describes, or None when it is not one the client could act on."""
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name or (tool_names is not None and name not in tool_names):
        return None
    key = next((k for k in arg_keys if k in obj), None)
    if key is None and args_required:
        return None
    args = obj[key] if key is not None else {}
    if isinstance(args, str):
        # Some models double-encode the arguments; the client still needs an object.
        try:
            args = json.loads(args)
        except _BAD_JSON:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(_new_id(), name, arguments_text(args))


def arguments_text(args: Any) -> str:
    """``args`` as a call's JSON ``arguments`` text, non-ASCII characters as they are, unless
    the model wrote an escaped lone surrogate (``"\\ud800"``): decoded, no UTF-8 response
    can carry it, so that text keeps every escape."""
    text = json.dumps(args, ensure_ascii=False)
    return text if is_unicode(text) else json.dumps(args)


def _hermes_call(block: str, tool_names: set[str] | None) -> ToolCall | None:
    try:
        obj = json.loads(block)
    except _BAD_JSON:
        return None
    # Inside <tool_call> the intent is explicit, so a call without arguments is still a call.
    # A model may name them "parameters" (Llama's key, which the required choice's output
    # uses too): read as no arguments, the call would reach the client without them.
    return _make_call(obj, ("arguments", "parameters"), tool_names, args_required=False)


def _parse_hermes(text: str, tool_names: set[str] | None) -> list[_Piece]:
    pieces: list[_Piece] = []
    pos = 0
    while (start := text.find(HERMES_OPEN, pos)) != -1:
        end = text.find(HERMES_CLOSE, start + len(HERMES_OPEN))
        if end == -1:
            break  # unterminated: the rest is content
        call = _hermes_call(text[start + len(HERMES_OPEN) : end], tool_names)
        pieces.append(text[pos:start])
        pieces.append(call or text[start : end + len(HERMES_CLOSE)])
        pos = end + len(HERMES_CLOSE)
    pieces.append(text[pos:])
    return pieces


def _partial_tag_len(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``tag``: they must wait,
    or a client could be shown half a tag that turns out to open a call."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class _HermesScanner:
    def __init__(self, tool_names: set[str] | None) -> None:
        self._tool_names = tool_names
        self._buf = ""  # outside a block: text not yet sent; inside: the block since <tool_call>
        self._in_block = False

    def feed(self, delta: str) -> list[_Piece]:
        # The arguments go out in one piece when the block closes: until then the block may
        # still turn out malformed, and a call already sent to the client cannot be taken back.
        self._buf += delta
        pieces: list[_Piece] = []
        while True:
            if not self._in_block:
                start = self._buf.find(HERMES_OPEN)
                if start == -1:
                    keep = _partial_tag_len(self._buf, HERMES_OPEN)
                    pieces.append(self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep :]
                    return pieces
                pieces.append(self._buf[:start])
                self._buf = self._buf[start + len(HERMES_OPEN) :]
                self._in_block = True
            else:
                end = self._buf.find(HERMES_CLOSE)
                if end == -1:
                    return pieces
                block = self._buf[:end]
                self._buf = self._buf[end + len(HERMES_CLOSE) :]
                self._in_block = False
                pieces.append(
                    _hermes_call(block, self._tool_names) or HERMES_OPEN + block + HERMES_CLOSE
                )

    def finish(self) -> list[_Piece]:
        rest = (HERMES_OPEN if self._in_block else "") + self._buf
        self._buf, self._in_block = "", False
        return [rest]


def _llama3_body(text: str) -> str | None:
    """The text after the optional prefix, or None while it cannot be told whether the output is
    a call (so streaming knows when to decide)."""
    body = text.lstrip()
    if PYTHON_TAG.startswith(body):
        return None  # empty, or possibly the start of the tag
    if body.startswith(PYTHON_TAG):
        body = body[len(PYTHON_TAG) :].lstrip()
        if not body:
            return None
    return body


def _parse_llama3(text: str, tool_names: set[str] | None) -> list[_Piece]:
    body = _llama3_body(text)
    if body is None or not body.startswith("{"):
        return [text]
    decoder = json.JSONDecoder()
    calls: list[_Piece] = []
    pos = 0
    while pos < len(body):
        try:
            obj, pos = decoder.raw_decode(body, pos)
        except _BAD_JSON:
            return [text]
        # Outside any markers, an answer that happens to be JSON with a "name" must not become a
        # call, so the arguments key is required here.
        call = _make_call(obj, ("parameters", "arguments"), tool_names, args_required=True)
        if call is None:
            return [text]
        calls.append(call)
        rest = body[pos:].lstrip()
        if rest and not rest.startswith(";"):
            return [text]
        rest = rest[1:].lstrip()
        pos = len(body) - len(rest)
    return calls


class _Llama3Scanner:
    def __init__(self, tool_names: set[str] | None) -> None:
        self._tool_names = tool_names
        self._buf = ""
        self._is_call: bool | None = None  # None: not decided yet

    def feed(self, delta: str) -> list[_Piece]:
        self._buf += delta
        if self._is_call is None:
            body = _llama3_body(self._buf)
            if body is None:
                return []
            self._is_call = body.startswith("{")
        if self._is_call:
            return []  # no end marker: only the end of the output says whether it parses
        text, self._buf = self._buf, ""
        return [text]

    def finish(self) -> list[_Piece]:
        text, self._buf = self._buf, ""
        return _parse_llama3(text, self._tool_names) if self._is_call else [text]


@dataclass(frozen=True)
class _Format:
    parse: Callable[[str, set[str] | None], list[_Piece]]
    scanner: Callable[[set[str] | None], _Scanner]


_FORMATS: dict[str, _Format] = {
    "hermes": _Format(_parse_hermes, _HermesScanner),
    "llama3_json": _Format(_parse_llama3, _Llama3Scanner),
}
TOOL_PARSERS: tuple[str, ...] = tuple(_FORMATS)


def _format(name: str) -> _Format:
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown tool parser {name!r}; choose one of {', '.join(TOOL_PARSERS)}"
        ) from None


def parse_pieces(name: str, text: str, tool_names: set[str] | None = None) -> list[str | ToolCall]:
    """A finished output's text and calls in the order they were written (the text between
    calls as written, unstripped): what ``parse`` joins, for a caller that keeps the order."""
    return _format(name).parse(text, tool_names)


def parse(name: str, text: str, tool_names: set[str] | None = None) -> ParsedOutput:
    """Split a finished output into content and tool calls. ``tool_names`` (the request's
    tools) keeps a call of a tool the client never offered from reaching it as a call."""
    pieces = parse_pieces(name, text, tool_names)
    content = "".join(p for p in pieces if isinstance(p, str)).strip()
    return ParsedOutput(content or None, [p for p in pieces if isinstance(p, ToolCall)])


class StreamingToolParser:
    """``parse`` for a stream of text deltas: feed each delta, then ``finish`` once at the end.

    Whitespace at either end of the content is dropped like ``parse``'s strip: leading
    whitespace until the first other character, and trailing whitespace is held until more
    content follows it (it is dropped at ``finish``).
    """

    def __init__(self, name: str, tool_names: set[str] | None = None) -> None:
        self._scanner = _format(name).scanner(tool_names)
        self._started = False  # whether any content was sent
        self._pending_ws = ""
        self.num_tool_calls = 0
        """How many calls were sent (a finish reason of "tool_calls" when not 0)."""

    def feed(self, delta: str) -> list[StreamDelta]:
        return self._deltas(self._scanner.feed(delta))

    def finish(self) -> list[StreamDelta]:
        deltas = self._deltas(self._scanner.finish())
        self._pending_ws = ""
        return deltas

    def _deltas(self, pieces: list[_Piece]) -> list[StreamDelta]:
        out: list[StreamDelta] = []
        for piece in pieces:
            if isinstance(piece, ToolCall):
                out.append(
                    StreamDelta(
                        index=self.num_tool_calls,
                        id=piece.id,
                        name=piece.name,
                        arguments=piece.arguments,
                    )
                )
                self.num_tool_calls += 1
                continue
            text = self._pending_ws + (piece if self._started else piece.lstrip())
            body = text.rstrip()
            self._pending_ws = text[len(body) :]
            if not body:
                continue
            self._started = True
            if out and out[-1].content is not None:
                out[-1].content += body
            else:
                out.append(StreamDelta(content=body))
        return out


def parser_for_template(chat_template: str | None) -> str | None:
    """The format a chat template teaches its model, going by the markers the template writes
    around calls, so the server can pick a parser without being told."""
    if chat_template is None:
        return None
    if HERMES_OPEN in chat_template:
        return "hermes"
    if PYTHON_TAG in chat_template or "ipython" in chat_template:
        return "llama3_json"
    return None
