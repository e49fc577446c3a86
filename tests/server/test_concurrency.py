"""Many clients share continuous batches; a client that leaves frees its slot at once."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from live_server import health_answers_during

CLIENTS = 64


def test_64_concurrent_streaming_clients_get_their_token_counts(server):
    import openai

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[int, int, str | None]:
        want = 4 + i % 9
        stream = await client.completions.create(
            model="demo",
            prompt=f"Request number {i}:",
            max_tokens=want,
            temperature=0.8,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        finish, used = None, None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                used = chunk.usage.completion_tokens
        return want, used, finish

    async def main() -> list[tuple[int, int, str | None]]:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="x", max_retries=0, timeout=120
        ) as client:
            return await asyncio.gather(*[one(client, i) for i in range(CLIENTS)])

    results = asyncio.run(main())
    assert len(results) == CLIENTS
    for want, used, finish in results:
        assert (used, finish) == (want, "length")
    assert server.engine.wait_idle(30)
    assert server.engine.snapshot.num_running == 0


def _aborts(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("sarathi:request_success_total") and 'finished_reason="abort"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_disconnected_streaming_client_frees_its_slot(server, http):
    before = _aborts(http)
    body = {
        "model": "demo",
        "prompt": "long story",
        "max_tokens": 200,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            data = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: {") for line in data)
            assert server.engine.snapshot.num_running >= 0
    # Leaving the block closed the connection mid-stream.
    assert server.engine.wait_idle(30)
    snap = server.engine.snapshot
    assert snap.num_running == 0 and snap.num_waiting == 0
    assert snap.cache.get("slots_used", 0) == 0
    assert _aborts(http) == before + 1


def test_a_disconnected_non_streaming_client_frees_its_slot(server, http):
    before = _aborts(http)
    body = {"model": "demo", "prompt": "long story", "max_tokens": 240, "n": 4, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=0.3) as c:
        try:
            c.post("/v1/completions", json=body)
        except httpx.TimeoutException:
            pass
    assert server.engine.wait_idle(30)
    snap = server.engine.snapshot
    assert snap.num_running == 0 and snap.cache.get("slots_used", 0) == 0
    assert _aborts(http) > before


@pytest.mark.parametrize(
    "route, body",
    [
        ("/v1/completions", {"prompt": "hi", "logprobs": 2}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True}),
    ],
)
def test_a_response_body_is_built_off_the_event_loop(server, http, monkeypatch, route, body):
    # A finished request's body grows with its outputs (n=128 with top_logprobs: 50 MB, 8 s
    # of Python): built on the event loop, it stalled every other client. Here building it
    # blocks until /health, asked meanwhile, has answered.
    state = server.app.state.sarathi
    building, answered = threading.Event(), threading.Event()
    token_text = state.token_text

    def slow_token_text(token_id: int) -> str:
        building.set()
        answered.wait(10)
        return token_text(token_id)

    monkeypatch.setattr(state, "token_text", slow_token_text)
    request = {"model": "demo", "max_tokens": 2, **body}
    r = health_answers_during(server, lambda: http.post(route, json=request), building, answered)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["logprobs"]


STREAMS = [
    ("/v1/completions", {"prompt": list(range(10, 70))}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello there " * 30}]}),
]


@pytest.mark.parametrize("route, body", STREAMS)
def test_a_streamed_chunk_of_prompt_logprobs_is_built_off_the_event_loop(
    server, http, monkeypatch, route, body
):
    # A stream's first chunk carries its prompt_logprobs: 2,000 prompt tokens with 20
    # alternatives each took over a second of Python, on the event loop, stalling every
    # other client. Here building them blocks until /health, asked meanwhile, has answered.
    state = server.app.state.sarathi
    building, answered = threading.Event(), threading.Event()
    token_text = state.token_text

    def slow_token_text(token_id: int) -> str:
        building.set()
        answered.wait(10)
        return token_text(token_id)

    monkeypatch.setattr(state, "token_text", slow_token_text)
    request = {"model": "demo", "max_tokens": 2, "stream": True, "prompt_logprobs": 20, **body}
    r = health_answers_during(server, lambda: http.post(route, json=request), building, answered)
    assert r.status_code == 200, r.text
    assert '"prompt_logprobs"' in r.text and "[DONE]" in r.text


@pytest.mark.parametrize("route, body", STREAMS)
def test_a_slow_readers_backlog_of_logprobs_is_built_off_the_event_loop(
    server, http, monkeypatch, route, body
):
    # A stream's next chunk carries every token its reader has not taken yet: a client that
    # reads slowly gets up to max_tokens tokens, each with 20 alternatives, in one chunk.
    # Here the stream's first chunk holds the event loop until the engine has made all 40
    # tokens; the backlog's chunk that follows is built off the event loop's thread.
    state = server.app.state.sarathi
    token_text = state.token_text
    threads: list[threading.Thread] = []

    def recording_token_text(token_id: int) -> str:
        if not threads:
            deadline = time.monotonic() + 30
            while server.engine.snapshot.num_running and time.monotonic() < deadline:
                time.sleep(0.01)
        threads.append(threading.current_thread())
        return token_text(token_id)

    monkeypatch.setattr(state, "token_text", recording_token_text)
    if route == "/v1/completions":
        logprobs = {"logprobs": 20}
    else:
        logprobs = {"logprobs": True, "top_logprobs": 20}
    request = {"model": "demo", "max_tokens": 40, "ignore_eos": True, "stream": True}
    r = http.post(route, json={**request, **logprobs, **body})
    assert r.status_code == 200 and "[DONE]" in r.text, r.text
    on_loop = threads.count(server.thread)
    assert threads[:on_loop] == [server.thread] * on_loop  # the first chunk's: a token or two
    assert len(threads) - on_loop >= 20 * 21  # the backlog's, every one off the loop


def test_slow_grammars_leave_other_clients_prompts_a_thread(server, http, monkeypatch):
    # A grammar may take seconds to compile (a{900000}: 7 s). Compiled in the default
    # thread pool, which also tokenizes prompts, one client's few such requests held every
    # thread, and a plain request waited for them. Here more compiles than the default pool
    # has threads are held, and a plain completion is answered meanwhile.
    import os

    structured = server.engine.engine.structured
    compile_grammar = structured.compile
    held, release = threading.Semaphore(0), threading.Event()

    def slow_compile(spec):
        held.release()
        release.wait(30)
        return compile_grammar(spec)

    monkeypatch.setattr(structured, "compile", slow_compile)
    default_threads = min(32, (os.cpu_count() or 1) + 4)
    request = {"model": "demo", "prompt": "hi", "max_tokens": 1, "guided_regex": "[ab]+"}
    results: list[int] = []

    def constrained() -> None:
        results.append(http.post("/v1/completions", json=request).status_code)

    workers = [threading.Thread(target=constrained) for _ in range(default_threads + 1)]
    for w in workers:
        w.start()
    try:
        assert held.acquire(timeout=10)  # a compile has begun
        with httpx.Client(base_url=server.url, timeout=10) as other:
            plain = other.post("/v1/completions", json={**request, "guided_regex": None})
        assert plain.status_code == 200, plain.text
    finally:
        release.set()
        for w in workers:
            w.join(60)
    assert results == [200] * len(workers)
