"""Admission control counts samples: each takes a slot, and waits for one like a request."""

from __future__ import annotations

import httpx
import pytest

from live_server import start_server, stop_server


@pytest.mark.parametrize(
    "route, body",
    [
        ("/v1/completions", {"prompt": "busy"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "busy"}]}),
    ],
)
def test_samples_count_against_the_waiting_bound(route: str, body: dict) -> None:
    """Two slots, at most two waiting: a request of eight samples running leaves six
    waiting, so the next is refused (counted per HTTP request, four such requests, 30
    samples, were taken)."""
    live = start_server({"max_num_seqs": 2}, max_waiting_requests=2)
    try:
        long = {**body, "n": 8, "max_tokens": 200, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=live.url, timeout=30) as h:
            with h.stream("POST", route, json=long) as running:
                assert running.status_code == 200
                lines = running.iter_lines()  # kept: dropping it would close the stream
                next(lines)  # admitted and generating
                refused = h.post(route, json={**body, "max_tokens": 2})
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["code"] == "overloaded"
            # The stream's samples are released with it: a request is taken again.
            assert h.post(route, json={**body, "max_tokens": 2}).status_code == 200
    finally:
        stop_server(live)


def test_an_overloaded_server_refuses_before_tokenizing() -> None:
    """With the queue full, a new request is refused without waiting for the tokenizer:
    here its threads are all busy (blocked), as in a burst of long prompts."""
    import threading

    live = start_server({"max_num_seqs": 1}, max_waiting_requests=1)
    tok = live.app.state.sarathi.tokenizer
    release = threading.Event()
    encode = tok.encode
    try:
        long = {"prompt": [1, 2, 3], "n": 2, "max_tokens": 200, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=live.url, timeout=30) as h:
            with h.stream("POST", "/v1/completions", json=long) as running:
                lines = running.iter_lines()  # kept: dropping it would close the stream
                next(lines)  # one sample running, one waiting: the queue is full
                tok.encode = lambda *a, **k: release.wait() and encode(*a, **k)
                refused = h.post(
                    "/v1/completions", json={"prompt": "some text", "max_tokens": 2}, timeout=5
                )
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "overloaded"
    finally:
        release.set()
        tok.encode = encode
        stop_server(live)
