"""How a response's output is told: whole, as output items (``output_items``), and streamed,
as numbered Responses events (``StreamEvents``), with the same items either way; and a failed
response's body (``failure``)."""

from __future__ import annotations

import uuid
from typing import Any

from sarathi.entrypoints.openai_server.errors import APIError
from sarathi.entrypoints.openai_server.protocol_responses import (
    FunctionCallOutput,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningContent,
    ReasoningOutput,
    ResponseErrorInfo,
    ResponseObject,
)
from sarathi.entrypoints.openai_server.responding import sse
from sarathi.entrypoints.openai_server.tools import ToolMode, ToolStream, is_json, tool_items
from sarathi.outputs import CompletionOutput
from sarathi.reasoning import SplitOutput


def failure(base: ResponseObject, err: APIError, output: list[OutputItem]) -> ResponseObject:
    code = "server_error" if err.status >= 500 else "invalid_prompt"
    return base.model_copy(
        update={
            "status": "failed",
            "error": ResponseErrorInfo(code=code, message=err.message),
            "output": list(output),
        }
    )


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _reasoning_id() -> str:
    return f"rs_{uuid.uuid4().hex}"


def _call_item_id() -> str:
    return f"fc_{uuid.uuid4().hex}"


def _cut_short(finish_reason: str | None, arguments: str) -> bool:
    """Whether a forced call's output ended before its arguments did: the length limit, or
    a stop string (arguments that do not parse). Streamed or not, the call is incomplete."""
    return finish_reason == "length" or not is_json(arguments)


def output_items(
    mode: ToolMode, c: CompletionOutput, split: SplitOutput | None = None
) -> list[OutputItem]:
    """The output items of a finished output, in the order the model wrote them: a message
    per run of text (text outside any calls) and a function_call item per call, as a stream
    tells them. A forced call is a call however its output ended, an incomplete one when the
    length limit or a stop string cut its arguments short (as it was streamed); any other
    output that is not a complete call is text. Cut by the length limit, the last item is
    incomplete when it is a message (the items before it were finished). With a reasoning
    parser (``split``), the reasoning is an item of its own before them, and the items are
    read from the answer alone."""
    items: list[OutputItem] = []
    text = c.text
    if split is not None:
        text = split.content or ""
        if split.reasoning:
            ended = split.answered or c.finish_reason != "length"
            items.append(
                ReasoningOutput(
                    id=_reasoning_id(),
                    content=[ReasoningContent(text=split.reasoning)],
                    status="completed" if ended else "incomplete",
                )
            )
    if mode.kind == "named":
        assert mode.function is not None
        call = FunctionCallOutput(
            id=_call_item_id(),
            call_id=f"call_{uuid.uuid4().hex[:24]}",
            name=mode.function,
            arguments=text,
            status="incomplete" if _cut_short(c.finish_reason, text) else "completed",
        )
        return [*items, call]
    pieces = tool_items(mode, text, c.finish_reason)
    for index, piece in enumerate(pieces):
        if isinstance(piece, str):
            cut = c.finish_reason == "length" and index == len(pieces) - 1
            items.append(
                OutputMessage(
                    id=_message_id(),
                    status="incomplete" if cut else "completed",
                    content=[OutputText(text=piece)],
                )
            )
        else:
            items.append(
                FunctionCallOutput(
                    id=_call_item_id(),
                    call_id=piece.id,
                    name=piece.function.name,
                    arguments=piece.function.arguments,
                    status="completed",
                )
            )
    return items


class StreamEvents:
    """A response's stream of events: the chat deltas of its output (tools.ToolStream's)
    told as Responses events, numbered, and the output items as streamed so far. As OpenAI's,
    one item at a time: an item's events lie between its ``output_item.added`` and
    ``output_item.done``, and the next item is added after that. Each run of text between
    calls is a message item, each call an item of its own, in the order written: the items of
    ``output_items``."""

    def __init__(self, mode: ToolMode) -> None:
        self.mode = mode
        self.items: list[OutputItem] = []
        self._tools = ToolStream(mode)
        self._open: OutputItem | None = None  # the item being streamed
        self._calls: dict[int, FunctionCallOutput] = {}  # chat tool-call index -> its item
        self._seq = 0
        # Set at the end: the output was cut by the length limit while still reasoning.
        self.reasoning_cut = False

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse(payload, event=kind)

    def response(self, kind: str, response: ResponseObject) -> str:
        return self.event(kind, response=response.model_dump(mode="json"))

    def feed(self, delta: str) -> list[str]:
        return self._deltas(self._tools.feed(delta))

    def think(self, text: str) -> list[str]:
        """Reasoning text: a ``reasoning`` item, opened by its first text."""
        if not text:
            return []
        events: list[str] = []
        if not isinstance(self._open, ReasoningOutput):
            events += self._open_item(
                ReasoningOutput(id=_reasoning_id(), content=[], status="in_progress"),
                ReasoningContent(text=""),
            )
        return events + self._append("response.reasoning_text.delta", text)

    def finish(self, finish_reason: str | None) -> list[str]:
        """The output's last deltas, then the last item's done events."""
        tail, _ = self._tools.finish(finish_reason)
        events = self._deltas(tail)
        if all(isinstance(i, ReasoningOutput) for i in self.items):
            events += self._open_message()  # no answer at all: an empty message, as non-streamed
        return events + self._close(finish_reason)

    def _close(self, finish_reason: str | None = None) -> list[str]:
        """The done events of the open item: ``finish_reason`` is the output's when the
        output ended with it, None when the next item closes it."""
        item, self._open = self._open, None
        if item is None:
            return []
        index = self.items.index(item)
        events = []
        if isinstance(item, ReasoningOutput):
            item.status = "incomplete" if self.reasoning_cut else "completed"
            events += self._text_done("response.reasoning_text.done", item, index)
        elif isinstance(item, FunctionCallOutput):
            cut = self.mode.kind == "named" and _cut_short(finish_reason, item.arguments)
            item.status = "incomplete" if cut else "completed"
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=index,
                    arguments=item.arguments,
                )
            )
        else:
            item.status = "incomplete" if finish_reason == "length" else "completed"
            events += self._text_done("response.output_text.done", item, index, logprobs=[])
        events.append(
            self.event("response.output_item.done", output_index=index, item=item.model_dump())
        )
        return events

    def _deltas(self, deltas: list[dict[str, Any]]) -> list[str]:
        events: list[str] = []
        for delta in deltas:
            if delta.get("content"):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
        return events

    def _add(self, item: OutputItem) -> list[str]:
        events = self._close()
        self.items.append(item)
        self._open = item
        events.append(
            self.event(
                "response.output_item.added",
                output_index=len(self.items) - 1,
                item=item.model_dump(),
            )
        )
        return events

    def _open_message(self) -> list[str]:
        return self._open_item(
            OutputMessage(id=_message_id(), status="in_progress", content=[]), OutputText(text="")
        )

    def _open_item(
        self, item: OutputMessage | ReasoningOutput, part: OutputText | ReasoningContent
    ) -> list[str]:
        """Add a text item (a message or reasoning) with its one, empty, content part."""
        events = self._add(item)
        item.content.append(part)  # type: ignore[arg-type]  # each item takes its own kind
        events.append(
            self.event(
                "response.content_part.added",
                item_id=item.id,
                output_index=len(self.items) - 1,
                content_index=0,
                part=part.model_dump(),
            )
        )
        return events

    def _append(self, kind: str, text: str, **fields: Any) -> list[str]:
        """``text`` added to the open text item's part, told as a ``kind`` delta event."""
        item = self._open
        assert isinstance(item, OutputMessage | ReasoningOutput)
        item.content[0].text += text
        return [
            self.event(
                kind,
                item_id=item.id,
                output_index=len(self.items) - 1,
                content_index=0,
                delta=text,
                **fields,
            )
        ]

    def _text_done(
        self, kind: str, item: OutputMessage | ReasoningOutput, index: int, **fields: Any
    ) -> list[str]:
        """A text item's part done: its ``kind`` event with the whole text, then the part's."""
        part = item.content[0]
        where = {"item_id": item.id, "output_index": index, "content_index": 0}
        return [
            self.event(kind, **where, text=part.text, **fields),
            self.event("response.content_part.done", **where, part=part.model_dump()),
        ]

    def _text(self, text: str) -> list[str]:
        events: list[str] = []
        if not isinstance(self._open, OutputMessage):
            if self.items:
                # Text after a call: the stream strips only the whole content's ends, a
                # message's text is stripped (tools.tool_items).
                text = text.lstrip()
            events += self._open_message()
        return events + self._append("response.output_text.delta", text, logprobs=[])

    def _call(self, fragment: dict[str, Any]) -> list[str]:
        """A chat tool-call delta: the call's first names it; later ones add arguments."""
        function = fragment.get("function") or {}
        item = self._calls.get(fragment["index"])
        events = []
        if item is None:
            item = FunctionCallOutput(
                id=_call_item_id(),
                call_id=fragment["id"],
                name=function["name"],
                arguments="",
                status="in_progress",
            )
            self._calls[fragment["index"]] = item
            events += self._add(item)
        arguments = function.get("arguments") or ""
        if arguments:
            item.arguments += arguments
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=self.items.index(item),
                    delta=arguments,
                )
            )
        return events

    def failure(self, base: ResponseObject, err: APIError) -> ResponseObject:
        """The failed response: its error, and the output items streamed before it."""
        return failure(base, err, self.items)

    def failed(self, err: APIError, response: ResponseObject) -> list[str]:
        return [
            self.event("error", code=err.code or err.type, message=err.message, param=err.param),
            self.response("response.failed", response),
        ]
