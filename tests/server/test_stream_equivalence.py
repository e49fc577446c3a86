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
