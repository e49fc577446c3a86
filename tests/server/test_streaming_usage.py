"""stream_options: include_usage closes the stream with the totals; continuous_usage_stats
puts the usage so far in every chunk (its choice's prompt and tokens, as vLLM counts them),
one chunk per step that made tokens (so a client can time each token, text or not); steps
a slow reader missed come as one chunk."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_counts_every_token(http, route):
    body = (
        {"prompt": "count me"}
        if route == "/v1/completions"
        else {"messages": [{"role": "user", "content": "count me"}]}
    )
    body.update(
        {
            "max_tokens": 12,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    )
    seen = []
    with http.stream("POST", route, json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event["choices"]:
                    seen.append(event["usage"]["completion_tokens"])
                else:
                    total = event["usage"]
    steps = [n for n in seen if n]  # the chat stream opens with a role chunk
    # One chunk a step while the reader keeps up; a busy host (the suite beside other work)
    # may coalesce steps, so the counts only have to rise to the total.
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps
    assert total["completion_tokens"] == 12


@pytest.mark.parametrize("logprobs", [None, 1])
def test_continuous_usage_is_in_the_echoed_prompts_chunks_too(http, logprobs):
    """The echoed prompt's chunks carried no usage, unlike every other chunk (vLLM puts it
    in each)."""
    body = {
        "prompt": ["count me", "and me"],
        "n": 2,
        "echo": True,
        "logprobs": logprobs,
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    events = []
    with http.stream("POST", "/v1/completions", json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    texts = [e["choices"][0]["text"] for e in events if e["choices"]]
    assert texts.count("count me") == texts.count("and me") == 2
    assert all("usage" in e for e in events)
    # As vLLM reports it: each chunk its own prompt's tokens; the closing chunk sums them.
    per_prompt: dict[int, set[int]] = {}
    for event in events[:-1]:
        per_prompt.setdefault(event["choices"][0]["index"] // 2, set()).add(
            event["usage"]["prompt_tokens"]
        )
    assert all(len(counts) == 1 for counts in per_prompt.values()), per_prompt
    assert sum(c for counts in per_prompt.values() for c in counts) == (
        events[-1]["usage"]["prompt_tokens"]
    )


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_counts_each_choice_on_its_own(http, route):
    """With n > 1 a chunk's completion_tokens were the request's total over every choice;
    vLLM reports the chunk's choice's own tokens so far (previous_num_tokens[i]), and the
    closing usage chunk the sum."""
    body = (
        {"prompt": "count me"}
        if route == "/v1/completions"
        else {"messages": [{"role": "user", "content": "count me"}]}
    )
    body.update(
        {
            "n": 3,
            "max_tokens": 5,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    )
    seen: dict[int, list[int]] = {}
    with http.stream("POST", route, json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event["choices"]:
                    seen.setdefault(event["choices"][0]["index"], []).append(
                        event["usage"]["completion_tokens"]
                    )
                else:
                    total = event["usage"]
    assert sorted(seen) == [0, 1, 2]
    for counts in seen.values():
        assert counts == sorted(counts) and counts[-1] == 5, seen
    assert total["completion_tokens"] == 15


def test_the_metrics_gateways_read(http):
    r = http.post(
        "/v1/completions", json={"prompt": "metrics", "max_tokens": 4, "ignore_eos": True}
    )
    assert r.status_code == 200
    text = http.get("/metrics").text
    for name in (
        "sarathi:kv_cache_usage_perc",
        "sarathi:num_requests_waiting",
        "sarathi:time_to_first_token_seconds_bucket",
        "sarathi:time_per_output_token_seconds_bucket",
        "sarathi:request_queue_time_seconds_bucket",
        "sarathi:e2e_request_latency_seconds_bucket",
    ):
        assert name in text, name
    usage = next(
        line for line in text.splitlines() if line.startswith("sarathi:kv_cache_usage_perc{")
    )
    assert 0.0 <= float(usage.rsplit(" ", 1)[1]) <= 1.0


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_needs_include_usage(http, route):
    # vLLM reads continuous_usage_stats only under include_usage: without it a stream
    # carries no usage at all, as one without stream_options.
    body = (
        {"prompt": "count me"}
        if route == "/v1/completions"
        else {"messages": [{"role": "user", "content": "count me"}]}
    )
    body.update(
        {
            "max_tokens": 5,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": False, "continuous_usage_stats": True},
        }
    )
    events = []
    with http.stream("POST", route, json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    assert events and all(e["choices"] for e in events)
    assert all(e.get("usage") is None for e in events), events
