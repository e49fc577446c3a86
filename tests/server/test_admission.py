"""Admission control counts samples: each takes a slot, and waits for one like a request."""

from __future__ import annotations

import time

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


def test_bodies_past_the_bytes_in_flight_bound_are_refused_and_counted() -> None:
    """One client holds most of --max-body-bytes-in-flight with a half-sent body: the next
    body is refused with 503 and Retry-After, and /metrics counts it under its own reason."""
    import socket
    import time
    from urllib.parse import urlparse

    live = start_server(max_request_bytes=2000, max_body_bytes_in_flight=2000)
    url = urlparse(live.url)
    held = socket.create_connection((url.hostname, url.port))
    try:
        held.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1900\r\n\r\n" + b" " * 1500
        )
        body = {"prompt": "hi", "max_tokens": 1, "user": "u" * 600}
        with httpx.Client(base_url=live.url, timeout=30) as h:
            state = live.app.state.sarathi
            deadline = time.monotonic() + 10
            while state.body_limits.in_flight < 1500 and time.monotonic() < deadline:
                time.sleep(0.01)  # the held body is read by the server's own event loop
            refused = h.post("/v1/completions", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            metrics = h.get("/metrics").text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith("sarathi:num_requests_rejected_total{")
            and 'reason="body_bytes_in_flight"' in x
        )
        assert float(line.rsplit(" ", 1)[1]) == 1
    finally:
        held.close()
        stop_server(live)


def test_a_full_queue_takes_a_client_with_nothing_in_flight_and_serves_it_next() -> None:
    """Two API keys, one slot, room for two waiting, the engine held still. Key 1 fills the
    queue: its fourth request is a 503. Key 2, with nothing in flight, is taken past the
    bound, and though queued last it runs right after key 1's first; its second is a 503."""
    import threading

    gate = threading.Event()

    def hold(engine) -> None:
        step = engine.step
        engine.step = lambda *a, **k: gate.wait(30) and step(*a, **k)

    live = start_server({"max_num_seqs": 1}, hold, max_waiting_requests=2, api_key=["k1", "k2"])
    body = {"prompt": "busy", "max_tokens": 20, "ignore_eos": True}
    one, two = ({"Authorization": f"Bearer {k}"} for k in ("k1", "k2"))
    done: list[str] = []

    def run(name: str, headers: dict) -> None:
        r = httpx.post(f"{live.url}/v1/completions", json=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        done.append(name)

    def send(name: str, headers: dict, admitted: int) -> threading.Thread:
        t = threading.Thread(target=run, args=(name, headers))
        t.start()
        deadline = time.monotonic() + 20
        while live.app.state.sarathi.engine.num_admitted < admitted:
            assert time.monotonic() < deadline, "the request was not admitted"
            time.sleep(0.01)
        return t

    try:
        threads = [send(f"k1-{i}", one, i + 1) for i in range(3)]
        with httpx.Client(base_url=live.url, timeout=30) as h:
            refused = h.post("/v1/completions", json=body, headers=one)
            assert refused.status_code == 503, refused.text
            threads.append(send("k2", two, 4))
            refused = h.post("/v1/completions", json=body, headers=two)
            assert refused.status_code == 503, refused.text
            gate.set()
            for t in threads:
                t.join(60)
        assert done == ["k1-0", "k2", "k1-1", "k1-2"]
    finally:
        gate.set()
        stop_server(live)
