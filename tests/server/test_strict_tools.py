"""``tool_choice: "auto"`` with a ``strict: true`` tool: free text, or calls in the parser's
format whose arguments match the strict tools' schemas (tool_grammars.py).

The grammars are checked token by token on the demo tokenizer; end to end, a demo model
whose <tool_call> and </tool_call> are special tokens is pushed into a call by a logit
bias on the opening tag (random weights never write one by themselves), so every
sampled output holds a call, and every call must be valid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from live_server import HERMES_TEMPLATE, check_call, special_tag_model, start_server, stop_server
from sarathi.entrypoints.openai_server.tool_grammars import ToolSchema, strict_auto_grammar
from sarathi.entrypoints.openai_server.tools import ToolMode, tool_message
from sarathi.sampling_params import StructuredOutputsParams
from sarathi.structured_output.compiler import compile_grammar
from sarathi.structured_output.vocabulary import grammar_vocabulary

ADD = ToolSchema(
    "add",
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    strict=True,
)
ECHO = ToolSchema("echo", {"type": "object", "properties": {"s": {"type": "string"}}}, strict=False)


@pytest.fixture(scope="module")
def demo_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from sarathi.transformers_utils.demo import demo_model_path

    return AutoTokenizer.from_pretrained(demo_model_path())


def _runs(tok: Any, grammar: str, ids: list[int]) -> bool:
    """Whether the grammar takes ``ids`` one token at a time and then the end of text."""
    vocabulary = grammar_vocabulary(tok, [tok.eos_token_id])
    matcher = compile_grammar(StructuredOutputsParams(grammar=grammar), vocabulary).deep_copy()
    return all(matcher.consume_token(t) for t in [*ids, tok.eos_token_id])


def _takes(tok: Any, grammar: str, text: str) -> bool:
    return _runs(tok, grammar, tok.encode(text, add_special_tokens=False))


HERMES_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 3}}\n</tool_call>'
LLAMA_CALL = '{"name": "add", "parameters": {"a": 3}}'
# Per format: outputs the grammar takes (each parses into valid calls or is an answer), and
# outputs it refuses (a wrong argument type, an unknown tool, an extra property, a call
# the parser would take but the format's canonical shape does not write, more after calls).
TAKEN = {
    "hermes": [
        "", "Just text, no call.", "a <tool_ca b", "mentions </tool_call> alone",
        HERMES_CALL, f"Let me add. {HERMES_CALL} Done.",
        '<tool_call>{"name": "add", "arguments": {"a": -7}}</tool_call>',
        '<tool_call>{"name": "echo", "arguments": {"x": [1, {"y": null}]}}</tool_call>',
        HERMES_CALL + HERMES_CALL,
    ],
    "llama3_json": [
        "", "Just text.", " not a call {", "<|python_tag|> no call",
        LLAMA_CALL, "  " + LLAMA_CALL, "<|python_tag|>" + LLAMA_CALL,
        LLAMA_CALL + '; {"name": "echo", "parameters": {"z": "w"}}',
    ],
}  # fmt: skip
REFUSED = {
    "hermes": [
        '<tool_call>{"name": "add", "arguments": {"a": "3"}}</tool_call>',
        '<tool_call>{"name": "sub", "arguments": {"a": 3}}</tool_call>',
        '<tool_call>{"name": "add", "arguments": {"a": 3, "b": 4}}</tool_call>',
        '<tool_call>{"arguments": {"a": 3}, "name": "add"}</tool_call>',
        '<tool_call>{"name": "echo", "arguments": [1]}</tool_call>',
        "text <tool_call>not json</tool_call>",
    ],
    "llama3_json": [
        '{"name": "add", "parameters": {"a": "3"}}',
        '{"name": "sub", "parameters": {"a": 3}}',
        ' {"name": "add", "arguments": {"a": 3}}',
        LLAMA_CALL + " and then text",
        "\u2003{}",
    ],
}


@pytest.mark.parametrize("parser", ["hermes", "llama3_json"])
def test_grammar_takes_text_and_valid_calls(demo_tokenizer, parser):
    grammar = strict_auto_grammar(parser, [ADD, ECHO], True, {})
    for text in TAKEN[parser]:
        assert _takes(demo_tokenizer, grammar, text), text
        # What the grammar takes, the parser reads as calls of the tools, valid ones for a
        # strict tool, or as an answer.
        msg = tool_message(ToolMode("auto", frozenset({"add", "echo"}), parser), text, "stop")
        for call in msg.tool_calls:
            args = json.loads(call.function.arguments)
            assert call.function.name == "echo" or isinstance(args["a"], int), text
        assert bool(msg.tool_calls) == ('"name"' in text), text


@pytest.mark.parametrize("parser", ["hermes", "llama3_json"])
def test_grammar_refuses_invalid_calls(demo_tokenizer, parser):
    grammar = strict_auto_grammar(parser, [ADD, ECHO], True, {})
    for text in REFUSED[parser]:
        assert not _takes(demo_tokenizer, grammar, text), text


@pytest.mark.parametrize("parser, call", [("hermes", HERMES_CALL), ("llama3_json", LLAMA_CALL)])
def test_grammar_without_parallel_calls_takes_one(demo_tokenizer, parser, call):
    grammar = strict_auto_grammar(parser, [ADD], False, {})
    assert _takes(demo_tokenizer, grammar, call)
    second = call if parser == "hermes" else "; " + call
    assert not _takes(demo_tokenizer, grammar, call + second)


def test_grammars_take_tags_that_are_special_tokens(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(special_tag_model(tmp_path))
    vocabulary = grammar_vocabulary(tok, [tok.eos_token_id])
    from sarathi.structured_output.manager import StructuredOutputManager

    special = StructuredOutputManager(tok, [tok.eos_token_id]).special_tokens(
        ["<tool_call>", "</tool_call>", "<|python_tag|>"]
    )
    start, end = tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    assert special == {"<tool_call>": start, "</tool_call>": end}
    assert vocabulary.is_special_token(start)
    grammar = strict_auto_grammar("hermes", [ADD], True, special)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    assert _runs(tok, grammar, [*enc("hi "), start, *enc('{"name": "add", "arguments": {"a": 1}}'), end])
    assert not _runs(tok, grammar, [start, *enc('{"name": "add", "arguments": {"a": true}}'), end])
    assert _takes(tok, grammar, HERMES_CALL)  # the tags spelled as text are still tags

    # A special <|python_tag|> (the special <tool_call> token stands for it) leads a call only.
    grammar = strict_auto_grammar("llama3_json", [ADD], True, {"<|python_tag|>": start})
    assert _runs(tok, grammar, [*enc(" "), start, *enc(" " + LLAMA_CALL)])
    assert not _runs(tok, grammar, [start, *enc("an answer")])


# -- end to end ----------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Rome", "Oslo"]},
                "unit": {"enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
        },
        "strict": True,
    },
}
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["a"],
        },
        "strict": True,
    },
}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """The demo model with special-token tags, the Hermes template and its parser."""
    path = tmp_path_factory.mktemp("strict")
    (path / "hermes.jinja").write_text(HERMES_TEMPLATE)
    live = start_server(
        {"model": special_tag_model(path), "max_model_len": 1024},
        chat_template=str(path / "hermes.jinja"),
        tool_call_parser="hermes",
        served_model_name="demo",
    )
    yield live
    stop_server(live)


def _open_bias(live: Any) -> dict[str, float]:
    """A logit bias that makes the model open a call whenever the grammar lets it."""
    (start,) = live.engine.engine.tokenizer.convert_tokens_to_ids(["<tool_call>"])
    return {str(start): 100.0}


def _post(live: Any, path: str, body: dict[str, Any]) -> Any:
    import httpx

    return httpx.post(live.url + path, json=body, timeout=120)


@pytest.mark.parametrize("parallel", [True, False])
def test_strict_auto_calls_are_valid(strict_server, parallel):
    body = {
        "messages": MESSAGES, "tools": [WEATHER, ADD_TOOL], "n": 4, "temperature": 1.0,
        "seed": 5, "max_tokens": 80, "logit_bias": _open_bias(strict_server),
        "parallel_tool_calls": parallel,
    }  # fmt: skip
    r = _post(strict_server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        calls = choice["message"]["tool_calls"]
        assert calls and choice["finish_reason"] == "tool_calls", choice
        assert len(calls) == 1 or parallel
        for call in calls:
            check_call(call["function"]["name"], call["function"]["arguments"])


def test_strict_auto_streams_valid_calls(strict_server):
    body = {
        "messages": MESSAGES, "tools": [WEATHER, ADD_TOOL], "temperature": 1.0, "seed": 7,
        "max_tokens": 80, "logit_bias": _open_bias(strict_server), "parallel_tool_calls": False,
        "stream": True,
    }  # fmt: skip
    r = _post(strict_server, "/v1/chat/completions", body)
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0] for c in chunks if c["choices"]]
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        for tc in d["delta"].get("tool_calls") or []:
            call = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
            call["name"] += tc["function"].get("name") or ""
            call["arguments"] += tc["function"].get("arguments") or ""
    assert len(calls) == 1 and deltas[-1]["finish_reason"] == "tool_calls"
    check_call(calls[0]["name"], calls[0]["arguments"])


def test_strict_function_tools_of_responses_are_valid(strict_server):
    tools = [{"type": "function", **t["function"]} for t in (WEATHER, ADD_TOOL)]
    body = {
        "input": "Weather?", "tools": tools, "temperature": 1.0, "seed": 3,
        "max_output_tokens": 80, "logit_bias": _open_bias(strict_server),
        "parallel_tool_calls": False,
    }  # fmt: skip
    r = _post(strict_server, "/v1/responses", body)
    assert r.status_code == 200, r.text
    calls = [item for item in r.json()["output"] if item["type"] == "function_call"]
    assert len(calls) == 1, r.json()["output"]
    check_call(calls[0]["name"], calls[0]["arguments"])


def test_calls_the_model_writes_by_itself_are_valid(tool_server):
    """The plain demo tokenizer (tags spelled in pieces): whatever the model writes, an
    output that holds a call holds only valid ones; the answers without one still end."""
    body = {
        "messages": MESSAGES, "tools": [WEATHER, ADD_TOOL], "n": 6, "temperature": 1.0,
        "seed": 11, "max_tokens": 40,
    }  # fmt: skip
    r = _post(tool_server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        for call in choice["message"]["tool_calls"] or []:
            check_call(call["function"]["name"], call["function"]["arguments"])
        assert "<tool_call>" not in (choice["message"]["content"] or "") or (
            choice["finish_reason"] == "length"
        )


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "tools": [WEATHER],
                                  "response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/chat/completions", {"messages": MESSAGES, "tools": [WEATHER],
                                  "guided_regex": "a+"}, "guided_regex"),
        ("/v1/responses", {"input": "hi", "tools": [{"type": "function", **WEATHER["function"]}],
                           "text": {"format": {"type": "json_object"}}}, "text.format"),
    ],
)  # fmt: skip
def test_strict_auto_with_another_constraint_is_400(tool_server, path, body, param):
    r = _post(tool_server, path, {**body, "max_tokens" if "messages" in body else "max_output_tokens": 5})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and "strict" in error["message"], error


def test_auto_without_strict_tools_takes_another_constraint(tool_server):
    loose = {**WEATHER, "function": {**WEATHER["function"], "strict": False}}
    body = {"messages": MESSAGES, "tools": [loose], "max_tokens": 5, "guided_regex": "a+"}
    assert _post(tool_server, "/v1/chat/completions", body).status_code == 200


def test_a_strict_tool_with_a_bad_schema_is_400(tool_server):
    bad = {**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "nonsense"}}}
    body = {"messages": MESSAGES, "tools": [bad], "max_tokens": 5}
    r = _post(tool_server, "/v1/chat/completions", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
    assert "strict tool 'get_weather'" in r.json()["error"]["message"]
