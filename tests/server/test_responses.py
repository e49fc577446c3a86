"""POST /v1/responses through the real ``openai`` SDK (``client.responses.create``), streamed
and not, on the demo model (random weights: the text is meaningless, so the tests check
structure, JSON validity under text.format, calls under a forced tool_choice, token counts,
event order, and the 400s of what this server cannot do; stored responses:
test_responses_store.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from live_server import API_KEY, HERMES_TEMPLATE, check_call
from sarathi.entrypoints.openai_server.chat_template import chat_prompt_ids
from sarathi.entrypoints.openai_server.field_audit import RESPONSES_UNSUPPORTED, UNSUPPORTED
from sarathi.entrypoints.openai_server.protocol_responses import ResponsesRequest
from sarathi.entrypoints.openai_server.responses_output import StreamEvents, output_items
from sarathi.entrypoints.openai_server.serving_responses import chat_messages
from sarathi.entrypoints.openai_server.tools import ToolMode
from sarathi.outputs import CompletionOutput

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "population": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
    },
    "required": ["city", "population"],
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}
ADD = {
    "type": "function",
    "name": "add",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a"],
    },
}
CALL_TEXT = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}\n</tool_call>'
)
# The events of one streamed message, in order (deltas repeat).
MESSAGE_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def _check_usage(r: Any, max_output_tokens: int) -> None:
    u = r.usage
    assert u.input_tokens > 0 and 0 < u.output_tokens <= max_output_tokens
    assert u.total_tokens == u.input_tokens + u.output_tokens


def _events(stream: Any) -> list[Any]:
    """The stream's events, checked for their numbering (0, 1, 2, ...)."""
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def _collapsed(types: list[str]) -> list[str]:
    """Event types with runs of deltas told once."""
    return [t for i, t in enumerate(types) if not (t.endswith(".delta") and types[i - 1] == t)]


# -- text ---------------------------------------------------------------------------------
def test_a_text_response(client):
    r = client.responses.create(model="demo", input="Hello there", max_output_tokens=8)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == "demo"
    assert r.status in ("completed", "incomplete")
    (item,) = r.output
    assert item.type == "message" and item.role == "assistant" and item.status == r.status
    (part,) = item.content
    assert part.type == "output_text" and r.output_text == part.text
    assert r.store is True and r.previous_response_id is None  # OpenAI's default: stored
    assert r.tool_choice == "auto" and r.tools == []  # OpenAI's echo of the defaults
    _check_usage(r, 8)


def test_max_output_tokens_bounds_the_output(client):
    r = client.responses.create(
        model="demo", input="Count", max_output_tokens=5, extra_body={"ignore_eos": True}
    )
    assert r.usage.output_tokens == 5 and r.max_output_tokens == 5
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.completed_at is None


def test_instructions_and_message_items_reach_the_prompt(client):
    plain = client.responses.create(model="demo", input="Hi", max_output_tokens=2)
    told = client.responses.create(
        model="demo", input="Hi", instructions="Answer briefly.", max_output_tokens=2
    )
    assert told.instructions == "Answer briefly."
    assert told.usage.input_tokens > plain.usage.input_tokens
    items = client.responses.create(
        model="demo",
        input=[
            {"role": "developer", "content": "Be kind."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
            },
            {"role": "user", "content": "And again?"},
        ],
        max_output_tokens=2,
        temperature=0.5,
        top_p=0.9,
    )
    assert items.usage.input_tokens > told.usage.input_tokens
    assert items.temperature == 0.5 and items.top_p == 0.9


def test_a_streamed_text_response(client):
    stream = client.responses.create(
        model="demo",
        input="Tell me a story",
        max_output_tokens=6,
        stream=True,
        extra_body={"ignore_eos": True},  # some text, so some deltas
    )
    events = _events(stream)
    types = [e.type for e in events]
    last = types[-1]
    assert last in ("response.completed", "response.incomplete")
    assert _collapsed(types) == [
        "response.created",
        "response.in_progress",
        *MESSAGE_EVENTS,
        last,
    ]
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    assert deltas == done.text == final.output_text
    ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert ids == {final.output[0].id}
    assert events[0].response.id == final.id
    _check_usage(final, 6)


def test_the_sdks_stream_helper_reads_a_completed_response(client):
    # The helper's final response needs response.completed: a JSON object ends the output.
    with client.responses.stream(
        model="demo",
        input="JSON please",
        max_output_tokens=200,
        text={"format": {"type": "json_schema", "name": "city", "schema": SCHEMA}},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.status == "completed"
    value = json.loads(final.output_text)
    assert set(value) == {"city", "population"}


# -- text.format --------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_text_format_json_schema_is_obeyed(client, stream):
    fmt = {"type": "json_schema", "name": "city", "schema": SCHEMA, "strict": True}
    kwargs = dict(
        model="demo",
        input="Describe a city as JSON.",
        max_output_tokens=200,
        temperature=1.0,
        text={"format": fmt},
    )
    if stream:
        events = _events(client.responses.create(stream=True, **kwargs))
        assert events[-1].type == "response.completed"
        r = events[-1].response
    else:
        r = client.responses.create(**kwargs)
    assert r.status == "completed"
    value = json.loads(r.output_text)
    assert isinstance(value["city"], str) and len(value["city"]) <= 10
    assert isinstance(value["population"], int)
    assert r.text.format.type == "json_schema" and r.text.format.name == "city"


def test_text_format_json_object(client):
    r = client.responses.create(
        model="demo",
        input="Any JSON object.",
        max_output_tokens=120,
        text={"format": {"type": "json_object"}},
        extra_body={"seed": 1},
    )
    if r.status == "completed":
        assert isinstance(json.loads(r.output_text), dict)
    else:  # a random model may write a long object: what it wrote is one in the making
        assert r.output_text.lstrip().startswith("{")


# -- tools --------------------------------------------------------------------------------
def test_a_named_function_choice_is_a_call(tools_client):
    r = tools_client.responses.create(
        model="demo",
        input="Weather in Paris?",
        tools=[WEATHER, ADD],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=100,
    )
    assert r.status == "completed"
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.status == "completed"
    check_call(call.name, call.arguments)
    assert r.tool_choice.type == "function" and r.tool_choice.name == "get_weather"
    assert [t.name for t in r.tools] == ["get_weather", "add"]


def test_a_required_choice_calls_an_offered_tool(tools_client):
    r = tools_client.responses.create(
        model="demo",
        input="Weather in Paris?",
        tools=[WEATHER, ADD],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=150,
    )
    assert r.status == "completed" and r.parallel_tool_calls is False
    (call,) = r.output
    assert call.type == "function_call"
    check_call(call.name, call.arguments)


@pytest.mark.parametrize(
    "choice",
    [{"type": "function", "name": "add"}, "required"],
)
def test_streamed_calls_send_argument_events(tools_client, choice):
    events = _events(
        tools_client.responses.create(
            model="demo",
            input="Add",
            tools=[ADD],
            tool_choice=choice,
            parallel_tool_calls=False,
            max_output_tokens=100,
            stream=True,
        )
    )
    assert _collapsed([e.type for e in events]) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, done = events[2].item, events[-2].item
    assert added.type == "function_call" and added.status == "in_progress"
    assert added.arguments == "" and added.name == "add"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == events[-3].arguments == done.arguments
    check_call(done.name, done.arguments)
    (final,) = events[-1].response.output
    assert final.call_id == done.call_id == added.call_id and final.arguments == deltas


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_call_cut_by_a_stop_string_is_an_incomplete_call(tools_client, stream):
    """As chat returns it: the call with the arguments written so far, marked incomplete
    (they do not parse), streamed or not."""
    kwargs = dict(
        model="demo", input="Weather?", tools=[WEATHER], max_output_tokens=100,
        tool_choice={"type": "function", "name": "get_weather"}, extra_body={"stop": [","]},
    )  # fmt: skip
    if stream:
        r = _events(tools_client.responses.create(stream=True, **kwargs))[-1].response
    else:
        r = tools_client.responses.create(**kwargs)
    (call,) = r.output
    assert call.type == "function_call" and call.status == "incomplete"
    assert call.arguments.startswith('{"city": ') and not call.arguments.endswith("}")


def test_auto_parses_text_and_a_call_from_the_models_format(tools_client):
    """A random model writes no call by itself: vLLM's guided_choice makes it write one."""
    events = _events(
        tools_client.responses.create(
            model="demo",
            input="Weather in Oslo?",
            tools=[WEATHER],
            max_output_tokens=100,
            stream=True,
            extra_body={"guided_choice": ["Sure. " + CALL_TEXT]},
        )
    )
    final = events[-1].response
    assert events[-1].type == "response.completed"
    message, call = final.output
    assert message.type == "message" and message.content[0].text == "Sure."
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo", "unit": "c"}
    done = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert done == ["message", "function_call"]
    assert final.output_text == "Sure."


def _same_response(r: Any) -> dict[str, Any]:
    """A response as JSON without what differs between two runs: ids, times, and the tokens
    the second found in the prefix cache."""
    body = r.model_dump(mode="json")
    for name in ("id", "created_at", "completed_at"):
        body.pop(name)
    body["usage"]["input_tokens_details"].pop("cached_tokens")
    for item in body["output"]:
        item.pop("id")
        item.pop("call_id", None)
    return body


@pytest.mark.parametrize(
    ("text", "types"),
    [
        (CALL_TEXT + " Done.", ["function_call", "message"]),
        ("Sure. " + CALL_TEXT + " Done.", ["message", "function_call", "message"]),
        ("Sure. " + CALL_TEXT, ["message", "function_call"]),
    ],
)
def test_output_items_are_in_the_order_written_streamed_or_not(tools_client, text, types):
    """OpenAI's contract: the streamed items and the response's output are the same items in
    the same order (output_index is the position in output), each item's events between its
    added and done; the order is the order the model wrote them in."""
    kwargs = dict(
        model="demo", input="Weather in Oslo?", tools=[WEATHER], max_output_tokens=100,
        extra_body={"guided_choice": [text]},
    )  # fmt: skip
    full = tools_client.responses.create(**kwargs)
    assert [item.type for item in full.output] == types
    events = _events(tools_client.responses.create(stream=True, **kwargs))
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert _same_response(final) == _same_response(full)
    added = [(e.output_index, e.item.type) for e in events if e.type.endswith("item.added")]
    assert added == list(enumerate(types))
    for index, item in enumerate(final.output):
        own = [i for i, e in enumerate(events) if getattr(e, "output_index", None) == index]
        assert events[own[0]].type == "response.output_item.added"
        assert events[own[-1]].type == "response.output_item.done"
        assert own == list(range(own[0], own[-1] + 1))  # no other item's events between
        assert all(getattr(events[i], "item_id", item.id) == item.id for i in own)
        assert events[own[-1]].item == item
    assert final.output_text == full.output_text


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("finish_reason", ["stop", "length"])
@pytest.mark.parametrize(
    "text",
    [
        "",
        "  just text ",
        CALL_TEXT,
        CALL_TEXT + "  \n Done. ",
        " Sure. \n" + CALL_TEXT + " and " + CALL_TEXT + " Done.",
        CALL_TEXT + "\n" + CALL_TEXT,
        "Sure. " + CALL_TEXT + " \n ",
        "Sure. <tool_call>\n{\"name\": \"get_weather\", ",  # cut mid-call: text
    ],
)
def test_streamed_items_are_the_non_streamed_items(text, finish_reason, parallel):
    """The stream's items (any split of the text into deltas) are output_items' items."""
    mode = ToolMode("auto", frozenset({"get_weather"}), "hermes", parallel=parallel)
    full = output_items(mode, CompletionOutput(0, text, [], finish_reason=finish_reason))
    for size in (1, 3, len(text) or 1):
        events = StreamEvents(mode)
        for start in range(0, len(text), size):
            events.feed(text[start : start + size])
        events.finish(finish_reason)
        assert [_item_json(i) for i in events.items] == [_item_json(i) for i in full]


def _item_json(item: Any) -> dict[str, Any]:
    return item.model_dump(exclude={"id", "call_id"})


@pytest.mark.parametrize("tools", [None, []])
def test_tool_choice_auto_without_tools_is_the_default(client, tools):
    """A response echoes tool_choice "auto" with no tools (OpenAI's default, and vLLM's):
    asked for explicitly, as agent frameworks do whatever tools they hold, it is taken."""
    kwargs = {} if tools is None else {"tools": tools}
    r = client.responses.create(
        model="demo", input="hi", max_output_tokens=2, tool_choice="auto", **kwargs
    )
    assert r.tool_choice == "auto" and r.tools == [] and r.output[0].type == "message"


def test_a_tool_round_trip(tools_client, tool_server):
    """The SDK's own output items go back as input, with the call's output."""
    first = tools_client.responses.create(
        model="demo",
        input="Weather in Rome?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=150,
    )
    (call,) = first.output
    history = [
        {"role": "user", "content": "Weather in Rome?"},
        *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 C and sunny"},
    ]
    second = tools_client.responses.create(
        model="demo", input=history, tools=[WEATHER], tool_choice="none", max_output_tokens=3
    )
    assert second.output[0].type == "message"
    assert second.usage.input_tokens > first.usage.input_tokens
    # What the template was given: the call (its arguments as an object) and its result.
    req = ResponsesRequest.model_validate(
        {"input": [h if isinstance(h, dict) else h.model_dump() for h in history]}
    )
    messages = chat_messages(req)
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[2].tool_call_id == call.call_id and messages[2].name == "get_weather"
    tok = tool_server.engine.engine.tokenizer
    text = tok.decode(chat_prompt_ids(tok, messages, HERMES_TEMPLATE))
    assert f'"arguments": {call.arguments}' in text and "21 C and sunny" in text


def test_instructions_and_calls_as_chat_messages():
    req = ResponsesRequest.model_validate(
        {
            "instructions": "Use tools.",
            "input": [
                {"role": "user", "content": "Paris and Rome?"},
                {"type": "message", "role": "assistant", "content": "Looking."},
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "1"},
                {
                    "type": "function_call_output",
                    "call_id": "b",
                    "output": [{"type": "input_text", "text": "2"}],
                },
            ],
        }
    )
    messages = chat_messages(req)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assistant = messages[2]
    assert assistant.content == "Looking."  # the calls join the message they follow
    assert [(c.id, c.function.name) for c in assistant.tool_calls or []] == [
        ("a", "f"),
        ("b", "g"),
    ]
    assert [(m.tool_call_id, m.name, m.content) for m in messages[3:]] == [
        ("a", "f", "1"),
        ("b", "g", "2"),
    ]


# -- what is refused ----------------------------------------------------------------------
def _refused(client: Any, param: str, **kwargs: Any) -> str:
    import openai

    kwargs = {"input": "hi", "max_output_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="demo", **kwargs)
    err = e.value.body
    assert e.value.status_code == 400 and err["type"] == "invalid_request_error", err
    assert err["param"] == param, err
    return err["message"]


def test_bookkeeping_fields_are_echoed(client):
    r = client.responses.create(
        model="demo", input="hi", max_output_tokens=2, metadata={"a": "b"}, user="u",
        prompt_cache_key="k", prompt_cache_retention="24h", safety_identifier="s",
        max_tool_calls=3,
    )  # fmt: skip
    assert r.metadata == {"a": "b"} and r.user == "u" and r.max_tool_calls == 3
    assert r.prompt_cache_key == "k" and r.safety_identifier == "s"
    assert r.prompt_cache_retention == "24h"


def test_reasoning_is_echoed_as_it_was_sent(client, http):
    """A response echoes the request's reasoning object, as OpenAI's (and vLLM's) do; it
    was echoed as null. Left out, it is null (vLLM's echo)."""
    r = client.responses.create(
        model="demo", input="hi", max_output_tokens=2, reasoning={"effort": "none"}
    )
    assert r.reasoning is not None
    assert r.reasoning.effort == "none" and r.reasoning.summary is None
    body = {"input": "hi", "max_output_tokens": 2}
    sent = {"effort": None, "summary": None, "context": "auto"}
    r = http.post("/v1/responses", json={**body, "reasoning": sent})
    assert r.status_code == 200, r.text
    assert r.json()["reasoning"] == sent
    assert http.post("/v1/responses", json=body).json()["reasoning"] is None
    stream = client.responses.create(
        model="demo", input="hi", max_output_tokens=2, reasoning={"effort": "none"}, stream=True
    )
    events = _events(stream)
    assert all(e.response.reasoning.effort == "none" for e in (events[0], events[-1]))


@pytest.mark.parametrize(
    "reasoning,param,says",
    [
        # The demo model's template reads neither reasoning_effort nor enable_thinking (test_reasoning_effort.py).
        ({"effort": "high"}, "reasoning.effort", "enable_thinking"),
        ({"effort": "low", "summary": "auto"}, "reasoning.summary", "not supported"),
        ({"summary": "auto"}, "reasoning.summary", "not supported"),
        ({"generate_summary": "concise"}, "reasoning.generate_summary", "not supported"),
        ({"effort": "extreme"}, "reasoning.effort", "none"),
        ({"summary": "long"}, "reasoning.summary", "concise"),
        ("high", "reasoning", "dictionary"),
    ],
)
def test_reasoning_is_validated_and_refused_where_it_asks_for_reasoning(
    http, reasoning, param, says
):
    """An effort the template cannot take (it reads no reasoning_effort), or a summary, is
    a 400 naming it; a value OpenAI does not define is a 400 listing those it does."""
    body = {"input": "hi", "max_output_tokens": 2, "reasoning": reasoning}
    r = http.post("/v1/responses", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and says in err["message"], err


# A value that asks for something, per field of the Responses table that the chat table has
# no entry for (those are checked on the chat route: test_field_audit.py).
ASKING = {
    "messages": [{"role": "user", "content": "hi"}],
    "truncate_prompt_tokens": 5,
    "documents": [{"text": "x"}],
    "max_tokens": 5,
    "max_completion_tokens": 5,
    "logprobs": True,
    "echo": True,
    "conversation": "conv_1",
    "background_options": {"continuation_id": "x"},
    "context_management": [{"type": "compaction", "compact_threshold": 1000}],
    "moderation": {"model": "omni-moderation-latest"},
    "prompt": {"id": "pmpt_1"},
    "include": ["message.output_text.logprobs"],
    "top_logprobs": 3,
    "truncation": "auto",
    "image": {"detail": "high"},
    "access_programs": {"type": "programmatic_tool_calling"},
    "prompt_cache_options": {"prewarm": True},
}


def test_the_table_covers_every_refused_field():
    # The chat table's fields of the Responses request model (max_output_tokens, ...) and
    # those with a meaning of their own here.
    own = {"tools", "tool_choice", "max_output_tokens", "instructions", "echo", "store"}
    own |= {"chat_template_kwargs"}
    shared = set(UNSUPPORTED) - own
    assert set(ASKING) | shared == set(RESPONSES_UNSUPPORTED)


@pytest.mark.parametrize("name", sorted(RESPONSES_UNSUPPORTED))
def test_a_field_that_asks_for_what_is_not_done_is_refused_by_name(http, name):
    from test_field_audit import ASKING as CHAT_ASKING

    value = ASKING[name] if name in ASKING else CHAT_ASKING[name]
    r = http.post("/v1/responses", json={"input": "hi", "max_output_tokens": 2, name: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == name and name in err["message"], err


@pytest.mark.parametrize(
    "extra",
    [
        {"reasoning": {"effort": "none"}},
        {"include": ["reasoning.encrypted_content"]},
        {"truncation": "disabled"},
        {"top_logprobs": 0},
        {"background": False},
        {"service_tier": "auto"},
        {"prompt_cache_key": "k", "prompt_cache_retention": "24h", "safety_identifier": "u1"},
        {"max_tool_calls": 3, "metadata": {"a": "b"}, "user": "u"},
        {"stream": True, "stream_options": {"include_obfuscation": False}},
        {"add_special_tokens": True},
        {"an_unknown_field": 1},
    ],
)
def test_defaults_and_harmless_fields_are_taken(http, extra):
    r = http.post("/v1/responses", json={"input": "hi", "max_output_tokens": 2, **extra})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tool_choice": {"type": "file_search"}, "tools": [WEATHER]}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}
                ]
            },
            "input",
        ),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        ({"extra_body": {"n": 2}}, "n"),
        ({"extra_body": {"response_format": {"type": "json_object"}}}, "response_format"),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "required",
                "text": {"format": {"type": "json_object"}},
            },
            "text.format",
        ),
    ],
)
def test_requests_that_cannot_be_honoured_are_400(client, kwargs, param):
    message = _refused(client, param, **kwargs)
    assert message


def test_errors_name_this_routes_fields(client):
    message = _refused(
        client,
        "guided_json",
        text={"format": {"type": "json_object"}},
        extra_body={"guided_json": SCHEMA},
    )
    assert "text.format" in message and "response_format" not in message
    message = _refused(client, "max_output_tokens", max_output_tokens=100_000)
    assert "max_output_tokens" in message and "max_tokens" not in message.replace("max_o", "")


def test_errors_in_input_items_name_their_real_path(client):
    # The item's type picks its model; the type is no key of the request, so the path
    # names the item and its field only.
    message = _refused(
        client, "input.0.content.0", input=[{"role": "user", "content": [{"type": "input_text"}]}]
    )
    assert message.startswith("input.0.content.0: ") and "needs 'text'" in message
    bad_output = [{"type": "function_call_output", "call_id": "a", "output": [{"type": "input_text"}]}]
    assert _refused(client, "input.0.output.0", input=bad_output)
    message = _refused(client, "input", input=[{"role": "user"}])
    assert "at 0.content" in message and "message" not in message.replace("0.content", "")


def test_a_chat_shaped_body_is_told_to_send_input(http):
    r = http.post("/v1/responses", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "'messages' to 'input'" in message and "Field required" not in message


def test_an_input_longer_than_the_context_is_a_400_naming_input(client):
    message = _refused(client, "input", input="word " * 2000)
    assert "context" in message or "long" in message


def test_the_api_key_guards_the_route(key_server):
    import openai

    with openai.OpenAI(base_url=key_server.base_url, api_key=API_KEY, max_retries=0) as c:
        r = c.responses.create(model="my-model", input="hi", max_output_tokens=2)
        assert r.model == "my-model"
    with openai.OpenAI(base_url=key_server.base_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.responses.create(model="my-model", input="hi", max_output_tokens=2)
