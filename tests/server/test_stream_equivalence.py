"""A streamed response, put back together as a client does, equals the same request's
non-streamed response: every choice's text, finish reason, stop reason and logprobs, and the
usage. Random requests (random_requests.py: greedy or seeded, so both runs draw the same
tokens), with logprobs and echo. STREAM_EQUIVALENCE_SEEDS=N runs N seeds of each (6)."""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest
from random_requests import PROMPTS, sampling_body

SEEDS = int(os.environ.get("STREAM_EQUIVALENCE_SEEDS", "6"))


def _whole_and_streamed(http: Any, route: str, body: dict[str, Any]) -> tuple[dict, list[dict]]:
    """The unstreamed response to ``body``, and the events of the same body streamed."""
    whole = http.post(route, json=body)
    assert whole.status_code == 200, whole.text
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    return whole.json(), _events(http, route, streamed)


def _events(http: Any, route: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    with http.stream("POST", route, json=body) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return events


def _completion_from_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for e in events:
        usage = e.get("usage") or usage
        for c in e["choices"]:
            got = choices.setdefault(c["index"], {"text": "", "logprobs": None})
            got["text"] += c["text"]
            if c.get("logprobs"):
                lp = got["logprobs"] = got["logprobs"] or {
                    "tokens": [], "token_logprobs": [], "top_logprobs": []
                }
                for key in lp:
                    lp[key] += c["logprobs"][key]
            if c.get("finish_reason") is not None:
                got["finish_reason"] = c["finish_reason"]
                got["stop_reason"] = c.get("stop_reason")
    return {"choices": [choices[i] for i in sorted(choices)], "usage": usage}


def _chat_from_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for e in events:
        usage = e.get("usage") or usage
        for c in e["choices"]:
            got = choices.setdefault(c["index"], {"content": "", "logprobs": None})
            got["content"] += c["delta"].get("content") or ""
            if c.get("logprobs"):
                got["logprobs"] = (got["logprobs"] or []) + c["logprobs"]["content"]
            if c.get("finish_reason") is not None:
                got["finish_reason"] = c["finish_reason"]
                got["stop_reason"] = c.get("stop_reason")
    return {"choices": [choices[i] for i in sorted(choices)], "usage": usage}


def _close(a: Any, b: Any) -> bool:
    """Equal, with floats equal to 1e-5 (logprobs travel as decimal text)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("seed", range(SEEDS))
def test_streamed_completions_equal_unstreamed(http, seed):
    rng = random.Random(seed)
    for _ in range(10):
        body = {"prompt": rng.choice(PROMPTS), **sampling_body(rng)}
        if rng.random() < 0.4:
            body["logprobs"] = rng.choice([0, 2])
        if rng.random() < 0.2:
            body["echo"] = True
        want, events = _whole_and_streamed(http, "/v1/completions", body)
        got = _completion_from_stream(events)
        for w, g in zip(want["choices"], got["choices"], strict=True):
            for key in ("text", "finish_reason", "stop_reason"):
                assert w[key] == g[key], (key, body, w, g)
            if w["logprobs"] is None:
                assert g["logprobs"] is None, body
            else:
                for key in ("tokens", "token_logprobs", "top_logprobs"):
                    assert _close(w["logprobs"][key], g["logprobs"][key]), (key, body)
        assert want["usage"] == got["usage"], body


@pytest.mark.parametrize("seed", range(SEEDS))
def test_streamed_chat_equals_unstreamed(http, seed):
    rng = random.Random(100 + seed)
    for _ in range(10):
        body = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}], **sampling_body(rng)}
        if rng.random() < 0.4:
            body["logprobs"] = True
            body["top_logprobs"] = rng.choice([0, 2])
        want, events = _whole_and_streamed(http, "/v1/chat/completions", body)
        got = _chat_from_stream(events)
        for w, g in zip(want["choices"], got["choices"], strict=True):
            assert (w["message"]["content"] or "") == g["content"], (body, w, g)
            assert w["finish_reason"] == g["finish_reason"], (body, w, g)
            assert w.get("stop_reason") == g["stop_reason"], (body, w, g)
            if w["logprobs"] is None:
                assert g["logprobs"] is None, body
            else:
                assert _close(w["logprobs"]["content"], g["logprobs"]), body
        assert want["usage"] == got["usage"], body


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_streamed_prompt_logprobs_with_several_choices_equal_unstreamed(http, route):
    """The engine sends a request's prompt logprobs with its first output only: a stream
    still gives them with the first chunk, and n > 1 choices and their logprobs match."""
    body: dict[str, Any] = {
        "n": 3, "temperature": 0.9, "seed": 5, "max_tokens": 12, "stop": [" e"],
        "prompt_logprobs": 2,
    }  # fmt: skip
    if route == "/v1/completions":
        body.update(prompt=PROMPTS[0], logprobs=2)
    else:
        body.update(messages=[{"role": "user", "content": PROMPTS[0]}], logprobs=True)
        body["top_logprobs"] = 2
    want, events = _whole_and_streamed(http, route, body)
    if route == "/v1/completions":
        got = _completion_from_stream(events)
        for w, g in zip(want["choices"], got["choices"], strict=True):
            assert (w["text"], w["finish_reason"]) == (g["text"], g["finish_reason"])
            for key in ("tokens", "token_logprobs", "top_logprobs"):
                assert _close(w["logprobs"][key], g["logprobs"][key]), key
        # Each choice's first chunk carries them.
        firsts: dict[int, Any] = {}
        for e in events:
            for c in e["choices"]:
                firsts.setdefault(c["index"], c.get("prompt_logprobs"))
        assert len(firsts) == 3
        for c in want["choices"]:
            assert firsts[c["index"]] is not None
            assert _close(firsts[c["index"]], c["prompt_logprobs"])
    else:
        got = _chat_from_stream(events)
        for w, g in zip(want["choices"], got["choices"], strict=True):
            assert (w["message"]["content"] or "") == g["content"]
            assert _close(w["logprobs"]["content"], g["logprobs"])
        carrying = [e["prompt_logprobs"] for e in events if e.get("prompt_logprobs")]
        assert len(carrying) == 1 and _close(carrying[0], want["prompt_logprobs"])
    assert want["usage"] == got["usage"]


@pytest.mark.parametrize("seed", range(3))
def test_streamed_responses_equal_unstreamed_and_are_stored_whole(http, seed):
    """The Responses API: a stream's final response (output and usage, made from what the
    server added up) is the unstreamed response's, and it is stored as streamed."""
    rng = random.Random(200 + seed)
    body = {
        "input": rng.choice(PROMPTS), "max_output_tokens": rng.choice([4, 16, 40]),
        "temperature": 0.0, "ignore_eos": rng.random() < 0.5,
    }  # fmt: skip
    whole = http.post("/v1/responses", json=body)
    assert whole.status_code == 200, whole.text
    want = whole.json()
    events = []
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    final = events[-1]["response"]
    assert final["status"] == want["status"]
    # The second run of the same prompt may find it in the prefix cache.
    cached = "input_tokens_details"
    assert {**final["usage"], cached: None} == {**want["usage"], cached: None}
    texts = [[p["text"] for p in item["content"]] for item in final["output"]]
    assert texts == [[p["text"] for p in item["content"]] for item in want["output"]]
    told = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert told == "".join(t for item in texts for t in item)
    stored = http.get(f"/v1/responses/{final['id']}")
    assert stored.status_code == 200 and stored.json() == final
