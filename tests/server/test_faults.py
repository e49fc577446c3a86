"""Faults inside the engine, as a device error would raise them: the request fails with a
clear error, the server reports unhealthy, nothing hangs. (The GPU-side versions, a real CUDA
error in a step, are for a GPU machine; the engine loop handles both the same way.)"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from live_server import start_server, stop_server

MESSAGE = "CUDA error: an illegal memory access was encountered"


def _fail_on_second_step(engine: Any) -> None:
    runner = engine.executor.worker.runner
    launch = runner.launch
    calls = {"n": 0}

    def failing(step: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise RuntimeError(MESSAGE)
        return launch(step)

    runner.launch = failing


def test_a_failing_step_fails_its_request_and_the_health_check() -> None:
    live = start_server(engine_hook=_fail_on_second_step)
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            body = {"prompt": "hello", "max_tokens": 20, "ignore_eos": True, "stream": True}
            with h.stream("POST", "/v1/completions", json=body) as resp:
                events = [line for line in resp.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            error = json.loads(events[-2][len("data: ") :])["error"]
            assert MESSAGE in error["message"] and error["code"] == "engine_dead"
            health = h.get("/health")
            assert health.status_code == 503 and MESSAGE in health.json()["error"]["message"]
            again = h.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
            assert again.status_code == 503
    finally:
        stop_server(live)


def test_a_failing_step_fails_a_streamed_response() -> None:
    """On /v1/responses the failure is an ``error`` event, then ``response.failed``."""
    import openai

    live = start_server(engine_hook=_fail_on_second_step)
    try:
        with openai.OpenAI(base_url=live.base_url, api_key="x", max_retries=0, timeout=30) as c:
            stream = c.responses.create(
                model="demo",
                input="hello",
                max_output_tokens=20,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            events = list(stream)
        assert [e.sequence_number for e in events] == list(range(len(events)))
        error, failed = events[-2:]
        assert error.type == "error" and error.code == "engine_dead" and MESSAGE in error.message
        assert failed.type == "response.failed" and failed.response.status == "failed"
        assert failed.response.error.code == "server_error"
        assert MESSAGE in failed.response.error.message
    finally:
        stop_server(live)


@pytest.mark.parametrize(
    "route,body",
    [
        ("/v1/completions", {"prompt": "hello", "logprobs": 1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True}),
    ],
)
def test_a_bug_mid_stream_is_an_error_event_not_a_cut_connection(route, body) -> None:
    """A failure of the route's own code while it streams (here: naming a token) ended the
    response without a word: the client saw the connection cut mid-body. As vLLM's, it is an
    error event, then [DONE]; the server serves on."""
    live = start_server()
    state = live.app.state.sarathi

    def broken(token_id: int) -> str:
        raise RuntimeError("a bug")

    state.token_text = broken
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            body = {**body, "max_tokens": 4, "stream": True}
            with h.stream("POST", route, json=body) as resp:
                events = [line for line in resp.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            error = json.loads(events[-2][len("data: ") :])["error"]
            assert error["type"] == "server_error" and error["code"] == "internal_error"
            assert "a bug" not in error["message"]  # nothing of the server's insides
            del state.token_text
            assert h.post(route, json={**body, "stream": False}).status_code == 200
    finally:
        stop_server(live)


def test_a_bug_mid_stream_fails_a_streamed_response(monkeypatch) -> None:
    """On /v1/responses the same failure is an ``error`` event, then ``response.failed``."""
    from sarathi.entrypoints.openai_server import serving_responses

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(serving_responses, "_finished", broken)
    live = start_server()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            body = {"input": "hi", "max_output_tokens": 4, "stream": True}
            with h.stream("POST", "/v1/responses", json=body) as resp:
                events = [json.loads(line[len("data: ") :]) for line in resp.iter_lines()
                          if line.startswith("data: ")]
        error, failed = events[-2:]
        assert error["type"] == "error" and error["code"] == "internal_error"
        assert failed["type"] == "response.failed"
        assert failed["response"]["error"]["code"] == "server_error"
    finally:
        stop_server(live)


def test_a_failing_prompt_of_several_ends_the_stream() -> None:
    """The streams of a request's prompts are read together; one failing otherwise than the
    engine's errors left its reader waiting for it forever: the response hung."""
    live = start_server()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")
        yield  # an async generator, as AsyncEngine.generate

    live.engine.generate = broken
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            body = {"prompt": ["hello", "there"], "max_tokens": 4, "stream": True}
            with h.stream("POST", "/v1/completions", json=body) as resp:
                events = [line for line in resp.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][len("data: ") :])["error"]["code"] == "internal_error"
    finally:
        stop_server(live)
