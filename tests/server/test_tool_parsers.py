"""The tool-call parsers: non-streaming cases of each format, streaming equal to non-streaming for
any split of the text, the OpenAI delta shapes, and picking a parser from a chat template."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from sarathi.entrypoints.openai_server.tool_parsers import (
    TOOL_PARSERS,
    ParsedOutput,
    StreamDelta,
    StreamingToolParser,
    parse,
    parser_for_template,
)

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "UTC"}}'
LLAMA_A = '{"name": "a", "parameters": {"x": 1}}'
LLAMA_B = '{"name": "b", "arguments": {}}'


def block(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


def calls(out: ParsedOutput) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, json.loads(c.arguments)) for c in out.tool_calls]


# --- hermes ------------------------------------------------------------------------------------


def test_hermes_one_call() -> None:
    out = parse("hermes", block(WEATHER))
    assert out.content is None
    assert calls(out) == [("get_weather", {"city": "Paris"})]
    assert out.tool_calls[0].arguments == '{"city": "Paris"}'
    assert re.fullmatch(r"call_[0-9a-f]{24}", out.tool_calls[0].id)


def test_hermes_several_calls() -> None:
    out = parse("hermes", block(WEATHER) + "\n" + block(TIME))
    assert out.content is None
    assert calls(out) == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]
    assert out.tool_calls[0].id != out.tool_calls[1].id


def test_hermes_content_and_calls_keeps_think() -> None:
    text = "<think>\nThe user wants weather.\n</think>\n\nLet me check.\n" + block(WEATHER) + "\n"
    out = parse("hermes", text)
    assert out.content == "<think>\nThe user wants weather.\n</think>\n\nLet me check."
    assert calls(out) == [("get_weather", {"city": "Paris"})]


def test_hermes_content_between_and_after_calls() -> None:
    out = parse("hermes", "A " + block(WEATHER) + " B " + block(TIME) + " C")
    assert out.content == "A  B  C"
    assert [c.name for c in out.tool_calls] == ["get_weather", "get_time"]


def test_hermes_arguments_reserialized() -> None:
    out = parse("hermes", '<tool_call>{"name":"f","arguments":{"q":"café","n":[1,2]}}</tool_call>')
    assert out.tool_calls[0].arguments == '{"q": "café", "n": [1, 2]}'


@pytest.mark.parametrize("name", TOOL_PARSERS)
def test_escaped_lone_surrogate_keeps_its_escape(name: str) -> None:
    """A model may write the escape of half a surrogate pair; decoded, it is a str no UTF-8
    response can carry (the server answered 500), so those arguments keep their escapes."""
    body = '{"name": "f", "arguments": {"s": "\\ud800", "q": "café"}}'
    text = block(body) if name == "hermes" else body
    (call,) = parse(name, text).tool_calls
    call.arguments.encode("utf-8")
    assert json.loads(call.arguments) == {"s": "\ud800", "q": "café"}


def test_hermes_missing_or_stringified_arguments() -> None:
    assert parse("hermes", block('{"name": "now"}')).tool_calls[0].arguments == "{}"
    out = parse("hermes", block('{"name": "f", "arguments": "{\\"a\\": 1}"}'))
    assert out.tool_calls[0].arguments == '{"a": 1}'
    # "parameters" (Llama's key) are the arguments too; they were dropped: f({}).
    out = parse("hermes", block('{"name": "f", "parameters": {"a": 1}}'))
    assert out.tool_calls[0].arguments == '{"a": 1}' and out.content is None


@pytest.mark.parametrize(
    "bad",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}',  # invalid JSON
        '{"arguments": {"city": "Paris"}}',  # no name
        '{"name": "", "arguments": {}}',
        '{"name": "f", "arguments": [1]}',  # arguments not an object
        '["get_weather"]',
        "[" * 100_000,  # deeper than the JSON decoder can recurse
    ],
)
def test_hermes_malformed_block_kept_as_content(bad: str) -> None:
    text = "Before " + block(bad) + " " + block(WEATHER)
    out = parse("hermes", text)
    assert out.content == "Before " + block(bad)
    assert calls(out) == [("get_weather", {"city": "Paris"})]


def test_hermes_unknown_tool_kept_as_content() -> None:
    text = block(WEATHER) + block(TIME)
    out = parse("hermes", text, tool_names={"get_time"})
    assert out.content == block(WEATHER)
    assert [c.name for c in out.tool_calls] == ["get_time"]
    assert parse("hermes", text, tool_names=set()).content == text


def test_hermes_unterminated_block_is_content() -> None:
    text = 'Sure. <tool_call>\n{"name": "get_weather", "arguments": {'
    out = parse("hermes", text)
    assert out == ParsedOutput(text, [])


def test_hermes_no_calls() -> None:
    assert parse("hermes", "  Hello, world!\n") == ParsedOutput("Hello, world!", [])
    assert parse("hermes", "") == ParsedOutput(None, [])
    assert parse("hermes", " \n ") == ParsedOutput(None, [])


# --- llama3_json -------------------------------------------------------------------------------


def test_llama3_one_call() -> None:
    out = parse("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert out.content is None
    assert calls(out) == [("get_weather", {"city": "Paris"})]


def test_llama3_prefix_whitespace_and_arguments_key() -> None:
    text = '\n <|python_tag|> {"name": "get_weather", "arguments": {"city": "Paris"}} \n'
    out = parse("llama3_json", text)
    assert out.content is None
    assert calls(out) == [("get_weather", {"city": "Paris"})]


def test_llama3_several_calls() -> None:
    text = '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}};'
    out = parse("llama3_json", text)
    assert out.content is None
    assert calls(out) == [("a", {"x": 1}), ("b", {})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "parameters": {"city": "Paris"}',  # truncated
        '{"name": "a", "parameters": {}} and then some words',
        '{"name": "a", "parameters": {}}; {"name": "b"',
        '{"name": "Bob", "age": 42}',  # JSON that is not a call: no parameters
        '{"parameters": {}}',
        '{"name": "a", "parameters": 3}',
        '{"name": "a", "parameters": {}}; [1]',
    ],
)
def test_llama3_malformed_is_content(text: str) -> None:
    assert parse("llama3_json", text) == ParsedOutput(text, [])


def test_llama3_unknown_tool_is_content() -> None:
    text = '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}'
    assert parse("llama3_json", text, tool_names={"a"}) == ParsedOutput(text, [])
    assert len(parse("llama3_json", text, tool_names={"a", "b"}).tool_calls) == 2


def test_llama3_no_calls() -> None:
    assert parse("llama3_json", " The answer is {x}. ") == ParsedOutput("The answer is {x}.", [])
    assert parse("llama3_json", "<|python_tag|>print(1)") == ParsedOutput(
        "<|python_tag|>print(1)", []
    )
    assert parse("llama3_json", "") == ParsedOutput(None, [])


def test_unknown_parser_name() -> None:
    with pytest.raises(ValueError, match="hermes"):
        parse("mistral", "x")
    with pytest.raises(ValueError):
        StreamingToolParser("mistral")
    assert TOOL_PARSERS == ("hermes", "llama3_json")


# --- streaming ---------------------------------------------------------------------------------

HERMES_TEXTS = [
    "",
    "   ",
    "Hello, world!",
    "  a < b and c <tool x> d <tool_call",
    block(WEATHER),
    "\n" + block(WEATHER) + "\n" + block(TIME) + "\n",
    "<think>\nhmm <tool_call> maybe\n</think>\n\nOK.\n" + block(WEATHER),
    "A " + block(WEATHER) + " B\n\n" + block('{"name": "x", "arguments": {') + " C ",
    block('{"name":"f","arguments":{"q":"café ☕","s":"</tool_call"}}') + "tail",
    "x <tool_call>\n" + WEATHER,  # unterminated
    "<tool_call><tool_call>" + WEATHER + "</tool_call>",
    "ends with partial tag <tool_ca",
]

LLAMA3_TEXTS = [
    "",
    " \n ",
    "Hello {not a call}",
    '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '  <|python_tag|>{"name": "a", "parameters": {"x": "é"}};\n{"name": "b", "arguments": {}}',
    '{"name": "a", "parameters": {"x": 1}} trailing words',
    "<|python_tag|>print('hi')",
    "<|python_tag",
    " <|pyth0n",
]

CASES = [("hermes", t) for t in HERMES_TEXTS] + [("llama3_json", t) for t in LLAMA3_TEXTS]


def splits(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and at random cut points."""
    out = [[text], list(text)]
    if len(text) < 2:
        return out
    for seed in range(6):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 8))))
        bounds = [0, *cuts, len(text)]
        out.append([text[a:b] for a, b in itertools.pairwise(bounds)])
    return out


def stream(name: str, deltas: list[str], tool_names: set[str] | None = None) -> list[StreamDelta]:
    parser = StreamingToolParser(name, tool_names)
    out = [d for delta in deltas for d in parser.feed(delta)]
    return out + parser.finish()


def assert_stream_matches(name: str, text: str, tool_names: set[str] | None = None) -> None:
    expected = parse(name, text, tool_names)
    for deltas in splits(text):
        got = stream(name, deltas, tool_names)
        contents = [d.content for d in got if d.content is not None]
        assert all(contents), "no empty content deltas"
        assert "".join(contents) == (expected.content or "")
        call_deltas = [d for d in got if d.content is None]
        by_index: dict[int, list[StreamDelta]] = {}
        for d in call_deltas:
            by_index.setdefault(d.index, []).append(d)
        assert list(by_index) == list(range(len(expected.tool_calls)))
        for i, call in enumerate(expected.tool_calls):
            first, *rest = by_index[i]
            assert first.name == call.name
            assert first.id is not None and re.fullmatch(r"call_[0-9a-f]{24}", first.id)
            assert all(d.id is None and d.name is None for d in rest)
            assert "".join(d.arguments for d in by_index[i]) == call.arguments


@pytest.mark.parametrize(("name", "text"), CASES)
def test_streaming_equals_parse(name: str, text: str) -> None:
    assert_stream_matches(name, text)


def test_streaming_equals_parse_with_tool_names() -> None:
    for text in HERMES_TEXTS:
        assert_stream_matches("hermes", text, {"get_time"})
    for text in LLAMA3_TEXTS:
        assert_stream_matches("llama3_json", text, {"a", "b"})


def test_streaming_never_shows_a_partial_tag() -> None:
    text = "Let me look. " + block(WEATHER) + " Done."
    got = stream("hermes", list(text))
    contents = [d.content for d in got if d.content is not None]
    assert not any("<" in c for c in contents)
    assert "".join(contents) == "Let me look.  Done."
    assert [d.name for d in got if d.content is None] == ["get_weather"]


def test_streaming_holds_back_only_what_may_be_a_tag() -> None:
    parser = StreamingToolParser("hermes")
    assert [d.content for d in parser.feed("a <")] == ["a"]
    assert [d.content for d in parser.feed("b")] == [" <b"]
    assert parser.feed("<tool_") == []
    assert [d.to_openai() for d in parser.finish()] == [{"content": "<tool_"}]


def test_streaming_hermes_call_sent_when_block_closes() -> None:
    parser = StreamingToolParser("hermes")
    assert parser.feed("<tool_call>\n" + WEATHER) == []
    (delta,) = parser.feed("\n</tool_call>")
    assert (delta.index, delta.name, delta.arguments) == (0, "get_weather", '{"city": "Paris"}')
    assert parser.num_tool_calls == 1
    assert parser.finish() == []


def test_streaming_llama3_decides_early() -> None:
    parser = StreamingToolParser("llama3_json")
    assert parser.feed(" <|python") == []
    assert [d.content for d in parser.feed("x")] == ["<|pythonx"]  # not the tag: content at once
    parser = StreamingToolParser("llama3_json")
    assert parser.feed('<|python_tag|>{"name": "a", "parameters": {}}') == []  # waits for the end
    (delta,) = parser.finish()
    assert (delta.name, delta.arguments) == ("a", "{}")


# --- OpenAI shapes -----------------------------------------------------------------------------


def test_to_openai_shapes() -> None:
    assert StreamDelta(content="hi").to_openai() == {"content": "hi"}
    first = StreamDelta(index=1, id="call_x", name="f", arguments='{"a": ')
    assert first.to_openai() == {
        "tool_calls": [
            {
                "index": 1,
                "id": "call_x",
                "type": "function",
                "function": {"name": "f", "arguments": '{"a": '},
            }
        ]
    }
    assert StreamDelta(index=1, arguments="1}").to_openai() == {
        "tool_calls": [{"index": 1, "function": {"arguments": "1}"}}]
    }


# --- picking a parser --------------------------------------------------------------------------

QWEN_TEMPLATE = """{%- if tools %}
{{- "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, "
    "\\"arguments\\": <args-json-object>}\\n</tool_call>" }}
{%- endif %}"""

LLAMA31_TEMPLATE = """{%- if message.role == "ipython" or message.role == "tool" %}
{{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
{%- endif %}"""

LLAMA_TAG_TEMPLATE = """{{- "<|python_tag|>" + tool_call.name + ".call(" }}"""

PLAIN_TEMPLATE = """{% for m in messages %}{{ m.role }}: {{ m.content }}\\n{% endfor %}"""


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (QWEN_TEMPLATE, "hermes"),
        (LLAMA31_TEMPLATE, "llama3_json"),
        (LLAMA_TAG_TEMPLATE, "llama3_json"),
        (PLAIN_TEMPLATE, None),
        (None, None),
    ],
)
def test_parser_for_template(template: str | None, expected: str | None) -> None:
    assert parser_for_template(template) == expected


FRAGMENTS = {
    "hermes": ["<tool_call>", "</tool_call>", "<tool_", "<", " ", "\n", "hi", WEATHER, block(TIME)],
    "llama3_json": ["<|python_tag|>", "<|py", " ", "\n", ";", "hi", "{", "}", LLAMA_A, LLAMA_B],
}


def random_llama3_calls(rng: random.Random) -> str:
    """Mostly well-formed call lists, which random fragments rarely produce."""
    prefix = rng.choice(["", " ", "<|python_tag|>", "\n<|python_tag|> "])
    objs = rng.choices([LLAMA_A, LLAMA_B, '{"name": "get_weather", "parameters": {}}'], k=3)
    body = rng.choice([";", "; ", " ;\n"]).join(objs[: rng.randint(1, 3)])
    return prefix + body + rng.choice(["", "", ";", " \n", " junk", "{"])


@pytest.mark.parametrize("name", TOOL_PARSERS)
def test_streaming_equals_parse_on_random_texts(name: str) -> None:
    rng = random.Random(0)
    for i in range(150):
        if name == "llama3_json" and i % 2:
            text = random_llama3_calls(rng)
        else:
            text = "".join(rng.choices(FRAGMENTS[name], k=rng.randint(0, 12)))
        assert_stream_matches(name, text, rng.choice([None, {"get_weather", "a"}]))
