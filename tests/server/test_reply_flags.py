"""--response-role and --enable-force-include-usage (vLLM's)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def flagged() -> Iterator[LiveServer]:
    live = start_server(response_role="model", enable_force_include_usage=True)
    yield live
    stop_server(live)


def _chunks(resp: httpx.Response) -> list[dict]:
    return [json.loads(x[6:]) for x in resp.text.splitlines() if x.startswith("data: {")]


def test_the_response_role(flagged, server):
    body = {"messages": MSG, "max_tokens": 2}
    with httpx.Client(base_url=flagged.url, timeout=60) as http:
        assert http.post(CHAT, json=body).json()["choices"][0]["message"]["role"] == "model"
        first = _chunks(http.post(CHAT, json={**body, "stream": True}))[0]
        assert first["choices"][0]["delta"]["role"] == "model"
        # A reply that continues the last message takes its role, as vLLM's.
        cont = {**body, "add_generation_prompt": False}
        assert http.post(CHAT, json=cont).json()["choices"][0]["message"]["role"] == "user"
    plain = httpx.post(server.url + CHAT, json=body, timeout=60).json()
    assert plain["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("path,body", [
    (CHAT, {"messages": MSG}), ("/v1/completions", {"prompt": "hi"}),
])  # fmt: skip
def test_every_stream_ends_with_usage(flagged, server, path, body):
    body = {**body, "max_tokens": 2, "ignore_eos": True, "stream": True}
    chunks = _chunks(httpx.post(flagged.url + path, json=body, timeout=60))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(c.get("usage") is None for c in chunks[:-1])
    plain = _chunks(httpx.post(server.url + path, json=body, timeout=60))
    assert all(c.get("usage") is None for c in plain)


def test_an_empty_role_is_refused():
    from sarathi.entrypoints.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--response-role", ""])
