"""Tool calling through the OpenAI API on the demo model (random weights) with a Hermes-style
chat template: named and required choices are constrained to the tools' schemas, auto is
parsed from the model's own format (forced here with a choice constraint, since a random model never
writes a call by itself), streamed and not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from live_server import HERMES_TEMPLATE as TEMPLATE
from live_server import check_call, special_tag_model
from sarathi.entrypoints.openai_server.chat_template import chat_prompt_ids
from sarathi.entrypoints.openai_server.protocol import ChatMessage
from sarathi.entrypoints.openai_server.tools import ToolMode, tool_message

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Rome", "Oslo"]},
                "unit": {"enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["a"],
        },
    },
}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}\n</tool_call>'


def _chat(client: Any, max_tokens: int = 100, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="demo", messages=MESSAGES, max_tokens=max_tokens, temperature=1.0, seed=2, **kwargs
    )


def test_named_choice_is_a_call_of_that_tool(tools_client):
    r = _chat(
        tools_client,
        tools=[WEATHER, ADD],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    msg = r.choices[0].message
    assert msg.content is None and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    check_call(call.function.name, call.function.arguments)


@pytest.mark.parametrize("parallel", [True, False])
def test_required_choice_calls_offered_tools(tools_client, parallel):
    r = _chat(
        tools_client, tools=[WEATHER, ADD], tool_choice="required", parallel_tool_calls=parallel,
        n=3, max_tokens=500,
    )
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        assert calls and (parallel or len(calls) == 1)
        for call in calls:
            check_call(call.function.name, call.function.arguments)


@pytest.mark.parametrize(
    "cut,finish", [({"stop": [","]}, "stop"), ({"max_tokens": 4}, "length")]
)
def test_a_named_call_cut_short_keeps_its_partial_arguments(tools_client, cut, finish):
    """As OpenAI and vLLM: a forced call is a call however its output ended; a stop string
    or max_tokens leaves its arguments cut short (finish_reason says which), as the stream
    sends them."""
    kwargs = {"max_tokens": 100, **cut}
    r = _chat(
        tools_client,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **kwargs,
    )
    choice = r.choices[0]
    assert choice.finish_reason == finish and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments.startswith('{"')
    assert not call.function.arguments.endswith("}")


def test_auto_parses_the_models_own_format(tools_client):
    r = _chat(tools_client, tools=[WEATHER], extra_body={"guided_choice": [CALL_TEXT]})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo", "unit": "c"}


@pytest.mark.parametrize("stream", [False, True])
def test_calls_with_an_escaped_lone_surrogate_reach_the_client(tool_server, stream):
    """Arguments holding ``"\\udc00"`` (JSON a model may write) were re-serialized with the
    bare surrogate, which no UTF-8 body can carry: a 500, or a stream cut off."""
    import httpx

    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "\\udc00"}}</tool_call>'
    r = httpx.post(
        tool_server.url + "/v1/chat/completions",
        json={"messages": MESSAGES, "max_tokens": 100, "tools": [WEATHER], "stream": stream,
              "guided_choice": [text]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    if stream:
        deltas = [json.loads(line[6:])["choices"] for line in r.text.splitlines()
                  if line.startswith("data: {")]
        args = "".join(tc["function"]["arguments"] for ch in deltas for c in ch
                       for tc in c["delta"].get("tool_calls") or [])
    else:
        (call,) = r.json()["choices"][0]["message"]["tool_calls"]
        args = call["function"]["arguments"]
    assert json.loads(args) == {"city": "\udc00"}


def test_required_calls_with_an_escaped_lone_surrogate_are_utf8():
    mode = ToolMode("required", frozenset({"f"}))
    msg = tool_message(mode, '[{"name": "f", "parameters": {"s": "\\ud800"}}]', "stop")
    (call,) = msg.tool_calls
    call.function.arguments.encode("utf-8")
    assert json.loads(call.function.arguments) == {"s": "\ud800"}


def test_auto_without_a_call_is_content(tools_client):
    r = _chat(tools_client, tools=[WEATHER], extra_body={"guided_regex": "[a-z]{3,8}"})
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content


def test_none_choice_answers_with_content(tools_client):
    r = _chat(tools_client, tools=[WEATHER], tool_choice="none", max_tokens=5)
    assert not r.choices[0].message.tool_calls


def _streamed(client: Any, **kwargs: Any) -> tuple[str, dict[int, dict[str, str]], str | None]:
    stream = client.chat.completions.create(
        model="demo", messages=MESSAGES, max_tokens=100, temperature=1.0, seed=4, stream=True,
        **kwargs,
    )
    content, calls, finish = "", {}, None
    for chunk in stream:
        for c in chunk.choices:
            said = c.delta.role or c.delta.content is not None or c.delta.tool_calls
            assert said or c.finish_reason, "a chunk carries something (text held back: none)"
            content += c.delta.content or ""
            for d in c.delta.tool_calls or []:
                if d.index not in calls:
                    assert d.id and d.function.name, "id and name come in a call's first delta"
                    calls[d.index] = {"name": d.function.name, "arguments": ""}
                else:
                    assert d.id is None and d.function.name is None
                calls[d.index]["arguments"] += d.function.arguments or ""
            finish = c.finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize(
    "kwargs,finish",
    [
        ({"tool_choice": {"type": "function", "function": {"name": "add"}}}, "stop"),
        ({"tool_choice": "required", "parallel_tool_calls": False}, "tool_calls"),
        ({"extra_body": {"guided_choice": ["Sure. " + CALL_TEXT]}}, "tool_calls"),
    ],
)
def test_streamed_tool_calls_have_openais_shape(tools_client, kwargs, finish):
    content, calls, got = _streamed(tools_client, tools=[WEATHER, ADD], **kwargs)
    assert got == finish and calls
    for call in calls.values():
        check_call(call["name"], call["arguments"])
    if "extra_body" in kwargs:
        assert content == "Sure."


def test_a_conversation_with_tool_calls_and_results(tools_client, tool_server):
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C and sunny"},
    ]
    r = tools_client.chat.completions.create(
        model="demo", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=4
    )
    assert r.choices[0].message.role == "assistant"
    tok = tool_server.engine.engine.tokenizer
    text = tok.decode(chat_prompt_ids(tok, [ChatMessage(**m) for m in history], TEMPLATE,
                                      tools=[WEATHER]))
    # The arguments reach the template as an object (written once, not as quoted text).
    assert '"arguments": {"city": "Paris"}' in text and "21 C and sunny" in text
    assert '"name": "get_weather"' in text


@pytest.mark.parametrize(
    "body,param",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "required",
          "response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
    ],
)
def test_tool_requests_that_cannot_be_honoured_are_400(tool_server, body, param):
    import httpx

    r = httpx.post(
        tool_server.url + "/v1/chat/completions",
        json={"messages": MESSAGES, "max_tokens": 4, **body},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert param in (err["param"] or "") or param in err["message"], err


def test_auto_needs_a_known_format(http):
    """The demo model's own template shows no tool-call format: auto is refused, clearly."""
    r = http.post(
        "/v1/chat/completions", json={"messages": MESSAGES, "tools": [WEATHER], "max_tokens": 4}
    )
    assert r.status_code == 400
    assert "--tool-call-parser" in r.json()["error"]["message"]


def test_tokenize_renders_tools_as_chat_does(tools_client, tool_server):
    """/tokenize with messages counts the prompt chat would send: tools and
    continue_final_message included (they were dropped, undercounting tool prompts)."""
    import httpx

    body = {"messages": MESSAGES, "tools": [WEATHER, ADD]}
    r = httpx.post(tool_server.url + "/tokenize", json=body, timeout=60)
    assert r.status_code == 200, r.text
    chat = tools_client.chat.completions.create(
        model="demo", max_tokens=1, tool_choice="none", **body
    )
    assert r.json()["count"] == chat.usage.prompt_tokens
    bare = httpx.post(tool_server.url + "/tokenize", json={"messages": MESSAGES}, timeout=60)
    assert bare.json()["count"] < r.json()["count"]
    text = httpx.post(
        tool_server.url + "/detokenize", json={"tokens": r.json()["tokens"]}, timeout=60
    ).json()["prompt"]
    assert '"name": "get_weather"' in text and '"name": "add"' in text

    partial = [*MESSAGES, {"role": "assistant", "content": "It is"}]
    r = httpx.post(
        tool_server.url + "/tokenize",
        json={"messages": partial, "continue_final_message": True, "add_generation_prompt": False},
        timeout=60,
    )
    chat = tools_client.chat.completions.create(
        model="demo", messages=partial, max_tokens=1,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert r.json()["count"] == chat.usage.prompt_tokens
    text = httpx.post(
        tool_server.url + "/detokenize", json={"tokens": r.json()["tokens"]}, timeout=60
    ).json()["prompt"]
    assert text.endswith("It is")

    # Extra template variables (vLLM's chat_template_kwargs) reach the template; one named
    # like a parameter of the template call itself is refused.
    plain = httpx.post(tool_server.url + "/tokenize", json={"messages": MESSAGES}, timeout=60)
    r = httpx.post(
        tool_server.url + "/tokenize",
        json={"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": False}},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["tokens"] == plain.json()["tokens"]
    r = httpx.post(
        tool_server.url + "/tokenize",
        json={"messages": MESSAGES, "chat_template_kwargs": {"tokenize": True}},
        timeout=60,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template_kwargs"


# Pydantic's schema of a tool with a nested model and an enum: local references into $defs.
NESTED = {
    "type": "function",
    "function": {
        "name": "book",
        "parameters": {
            "$defs": {
                "Seat": {
                    "type": "object",
                    "properties": {
                        "row": {"type": "integer", "minimum": 1, "maximum": 30},
                        "cls": {"$ref": "#/$defs/Cls"},
                    },
                    "required": ["row", "cls"],
                },
                "Cls": {"enum": ["eco", "biz"], "type": "string"},
            },
            "type": "object",
            "properties": {"seat": {"$ref": "#/$defs/Seat"}},
            "required": ["seat"],
        },
    },
}


@pytest.mark.parametrize("parallel", [True, False])
def test_required_choice_takes_tools_with_local_references(tools_client, parallel):
    """A tool's $defs references resolve inside the list of calls a required choice is held
    to (they pointed at the list's root: a 400, "Pointer '/$defs/Seat' does not exist")."""
    r = _chat(
        tools_client, tools=[WEATHER, NESTED], tool_choice="required",
        parallel_tool_calls=parallel, n=2, max_tokens=300,
    )
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls", choice
        for call in choice.message.tool_calls:
            if call.function.name == "book":
                seat = json.loads(call.function.arguments)["seat"]
                assert 1 <= seat["row"] <= 30 and seat["cls"] in ("eco", "biz")
            else:
                check_call(call.function.name, call.function.arguments)


def test_rebased_references_follow_the_schema():
    from sarathi.entrypoints.openai_server.tools import _rebased

    schema = {
        "type": "object",
        "properties": {
            "child": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
            "default": {"$ref": "#/$defs/A"},  # a property named like a keyword
            "$ref": {"type": "string"},  # a property named $ref
            "tag": {"const": {"$ref": "#/not/a/reference"}},
        },
        "$defs": {"A": {"items": {"$ref": "#/$defs/A"}}},
    }
    out = _rebased(schema, "/$defs/tool_0")
    assert out["properties"]["child"]["anyOf"][0] == {"$ref": "#/$defs/tool_0"}
    assert out["properties"]["default"] == {"$ref": "#/$defs/tool_0/$defs/A"}
    assert out["properties"]["$ref"] == {"type": "string"}
    assert out["properties"]["tag"] == {"const": {"$ref": "#/not/a/reference"}}
    assert out["$defs"]["A"]["items"] == {"$ref": "#/$defs/tool_0/$defs/A"}
    assert schema["$defs"]["A"]["items"] == {"$ref": "#/$defs/A"}  # a copy
    own = {"$id": "https://example.com/s", "properties": {"a": {"$ref": "#/$defs/B"}}}
    assert _rebased(own, "/x") == own


@pytest.mark.parametrize("depth", [700, 50_000])
def test_deeply_nested_call_arguments_are_not_a_500(tool_server, depth):
    """An earlier call's arguments are JSON text, not bounded by the request's nesting limit:
    700 levels decode and then exhaust the stack in the template's tojson, 50,000 in the
    decoder itself. Both were 500s; the template takes text that does not decode as it is."""
    import httpx

    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "[" * depth + "]" * depth},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
    ]
    for path, body in (
        ("/v1/chat/completions", {"max_tokens": 2}),
        ("/tokenize", {}),
    ):
        r = httpx.post(tool_server.url + path, json={"messages": history, **body}, timeout=60)
        assert r.status_code in (200, 400), (path, r.status_code, r.text[:200])
        if r.status_code == 400:
            assert r.json()["error"]["param"] == "messages"


@pytest.fixture(scope="module")
def special_tag_server(tmp_path_factory):
    from live_server import start_server, stop_server

    path = tmp_path_factory.mktemp("special")
    (path / "hermes.jinja").write_text(TEMPLATE)
    live = start_server(
        {"model": special_tag_model(path), "max_model_len": 1024}, chat_template=str(path / "hermes.jinja"),
        served_model_name="demo",
    )
    yield live
    stop_server(live)


def test_auto_parses_calls_whose_tags_are_special_tokens(special_tag_server):
    """The tags reach the hermes parser though skip_special_tokens is on by default, as vLLM
    turns it off for tool calling: skipped, the call came back as its bare JSON in content.
    A client that asks to skip them still gets what it asked for."""
    import httpx

    tok = special_tag_server.engine.engine.tokenizer
    start, end = tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}})
    grammar = f"start: <[{start}]> {json.dumps(call)} <[{end}]>"  # the tags as special tokens
    body = {"messages": MESSAGES, "tools": [WEATHER], "max_tokens": 60, "guided_grammar": grammar}
    url = special_tag_server.url
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    (choice,) = r["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (got,) = choice["message"]["tool_calls"]
    assert json.loads(got["function"]["arguments"]) == {"city": "Oslo", "unit": "c"}

    text = httpx.post(url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60).text
    assert '"finish_reason":"tool_calls"' in text.replace(" ", "") and "get_weather" in text

    r = httpx.post(url + "/v1/responses", timeout=60, json={
        "input": "Weather?", "max_output_tokens": 60, "guided_grammar": grammar,
        "tools": [{"type": "function", **WEATHER["function"]}],
    }).json()
    assert [item["type"] for item in r["output"]] == ["function_call"], r

    skipped = httpx.post(url + "/v1/chat/completions", timeout=60,
                         json={**body, "skip_special_tokens": True}).json()["choices"][0]
    assert skipped["message"]["content"] == call and not skipped["message"]["tool_calls"]
