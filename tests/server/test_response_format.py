"""Structured outputs through the OpenAI API: response_format, vLLM's structured_outputs and
guided_* extras, streamed and not, on the demo model (random weights)."""

from __future__ import annotations

import json
import re

import pytest

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "population": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
}
MESSAGES = [{"role": "user", "content": "Describe a city as JSON."}]


def _valid(text: str) -> dict:
    value = json.loads(text)
    assert set(value) == {"city", "population", "capital"}
    assert isinstance(value["city"], str) and len(value["city"]) <= 10
    assert isinstance(value["population"], int) and isinstance(value["capital"], bool)
    return value


def test_chat_json_schema(client):
    r = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=200,
        temperature=1.0,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
        },
    )
    assert r.choices[0].finish_reason == "stop"
    _valid(r.choices[0].message.content)


def test_chat_json_schema_streamed(client):
    stream = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=200,
        temperature=0.8,
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
    )
    text, finish = "", None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert finish == "stop"
    _valid(text)


def _four_choices(client, response_format: dict, max_tokens: int, seed: int) -> tuple[list, list]:
    """Four sampled chat choices under ``response_format``, and those that ended ("stop"): a
    random model may write an endless string."""
    r = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=max_tokens,
        temperature=1.0,
        seed=seed,
        n=4,
        response_format=response_format,
    )
    return r.choices, [c for c in r.choices if c.finish_reason == "stop"]


def test_chat_json_object(client):
    """Any object: those that end are valid."""
    choices, ended = _four_choices(client, {"type": "json_object"}, 200, 5)
    assert ended and all(c.message.content.startswith("{") for c in choices)
    for c in ended:
        assert isinstance(json.loads(c.message.content), dict)


def test_an_empty_json_schema_is_any_json(client):
    """``"schema": {}`` asks for any JSON value, as vLLM reads it (it was a 400, the empty
    schema taken for a missing one)."""
    fmt = {"type": "json_schema", "json_schema": {"name": "any", "schema": {}}}
    _, ended = _four_choices(client, fmt, 60, 7)
    for c in ended:
        json.loads(c.message.content)


@pytest.mark.parametrize(
    "extra,valid",
    [
        ({"guided_regex": r"[A-Z][a-z]{2,6}-[0-9]{2}"}, r"[A-Z][a-z]{2,6}-[0-9]{2}"),
        ({"guided_choice": ["red", "green", "blue"]}, r"red|green|blue"),
        ({"guided_grammar": 'root ::= "<" [a-z] [a-z]? [a-z]? ">"'}, r"<[a-z]{1,3}>"),
        ({"structured_outputs": {"regex": r"[0-9]{4}"}}, r"[0-9]{4}"),
        ({"structured_outputs": {"choice": ["yes", "no"]}}, r"yes|no"),
        ({"guided_json": SCHEMA, "guided_decoding_backend": "xgrammar"}, None),
        ({"structured_outputs": {"json": SCHEMA, "disable_any_whitespace": True}}, None),
    ],
)
def test_completions_with_vllm_extras(client, extra, valid):
    r = client.completions.create(
        model="demo",
        prompt="answer:",
        max_tokens=120,
        temperature=1.0,
        seed=7,
        n=3,
        extra_body=extra,
    )
    for c in r.choices:
        assert c.finish_reason == "stop", c.text
        if valid is None:
            _valid(c.text)
        else:
            assert re.fullmatch(valid, c.text), c.text


@pytest.mark.parametrize(
    "body,param",
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                }
            },
            "response_format",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
        ({"guided_regex": "a(b"}, "guided_regex"),
        ({"guided_grammar": "root ::= ( unclosed"}, "guided_grammar"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"json": {}, "whitespace_pattern": " "}}, "structured_outputs"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_bad_constraints_are_400_naming_the_field(http, body, param):
    r = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert param in (err["param"] or "") or param in err["message"], err


def test_a_grammar_failing_mid_way_is_an_error_not_a_stop(http):
    """A regex past llguidance's limits fails on the first token, after the request was
    admitted: a 400 naming the failure, or in a stream an error event before [DONE]."""
    body = {"prompt": "x", "max_tokens": 8, "structured_outputs": {"regex": "a{1000000}"}}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "output_constraint_failed" and "output constraint" in err["message"]
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == "output_constraint_failed", events
    assert not any(
        c.get("finish_reason") == "stop" for e in events[:-1] for c in json.loads(e).get("choices", [])
    )
