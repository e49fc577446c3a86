"""--enable-log-requests and --enable-log-outputs (vLLM's): a line per request taken, with its
prompt cut to --max-log-len, and one per finished output; nothing without the flags."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server

LOGGER = "sarathi.requests"


@pytest.fixture(scope="module")
def logged() -> Iterator[LiveServer]:
    live = start_server(enable_log_requests=True, enable_log_outputs=True, max_log_len=5)
    yield live
    stop_server(live)


def test_requests_and_outputs_are_logged(logged, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER), httpx.Client(
        base_url=logged.url, timeout=60
    ) as http:
        body = {"prompt": "Hello there, friend", "max_tokens": 3, "n": 2, "ignore_eos": True}
        resp = http.post("/v1/completions", json=body)
        assert resp.status_code == 200
        reply_id = resp.json()["id"]
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                "ignore_eos": True, "stream": True}  # fmt: skip
        assert "[DONE]" in http.post("/v1/chat/completions", json=chat).text
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    received = [x for x in lines if " received: " in x]
    assert len(received) == 2
    # Without a caller's id the response carries the engine's, which the log names.
    assert received[0].startswith(f"request {reply_id}-0 received: ")
    # The server's prompts reach the engine as token ids: their text (five characters of
    # it) and five of the ids are shown, then their count.
    assert "received: prompt 'Hello'..., prompt_token_ids [" in received[0]
    assert "params SamplingParams(n=2," in received[0]
    for x in received:
        ids = x[x.index("prompt_token_ids [") :]
        assert ids.count(", ", 0, ids.index("]")) == 4 and "]... (" in ids
    finished = [x for x in lines if " finished (" in x]
    assert len(finished) == 3  # the two completions and the chat's one
    assert sum("(length, 3 tokens)" in x for x in finished) == 2
    assert any("output 0 finished (length, 2 tokens)" in x for x in finished)


def test_nothing_is_logged_by_default(server, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        body = {"prompt": "Hello", "max_tokens": 2}
        assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_outputs_alone_are_refused():
    with pytest.raises(ValueError, match="--enable-log-outputs needs --enable-log-requests"):
        start_server(enable_log_outputs=True)
