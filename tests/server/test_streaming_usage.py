"""stream_options: include_usage closes the stream with the totals; continuous_usage_stats
puts the usage so far in every chunk, one chunk per step that made tokens (so a client can
time each token, text or not)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_counts_every_token(http, route):
    body = ({"prompt": "count me"} if route == "/v1/completions"
            else {"messages": [{"role": "user", "content": "count me"}]})
    body.update({"max_tokens": 12, "ignore_eos": True, "stream": True,
                 "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
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
    assert steps == list(range(1, 13))
    assert total["completion_tokens"] == 12
