"""Faults inside the engine, as a device error would raise them: the request fails with a
clear error, the server reports unhealthy, nothing hangs. (The GPU-side versions, a real CUDA
error in a step, are for a GPU machine; the engine loop handles both the same way.)"""

from __future__ import annotations

import json
from typing import Any

import httpx

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
