"""POST /invocations (Amazon SageMaker's route, as vLLM serves it): a chat completion's body
or a completion's, each answered as its own route answers it."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_a_chat_body_is_a_chat_completion(http):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True}
    r = http.post("/invocations", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["usage"]["completion_tokens"] == 3
    streamed = http.post("/invocations", json={**body, "stream": True})
    assert "chat.completion.chunk" in streamed.text and "data: [DONE]" in streamed.text


def test_a_completion_body_is_a_completion(http):
    body = {"prompt": "Hello", "max_tokens": 2, "temperature": 0, "ignore_eos": True}
    r = http.post("/invocations", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion"
    assert r.json()["choices"][0]["text"] == http.post("/v1/completions", json=body).json()[
        "choices"][0]["text"]  # fmt: skip


@pytest.mark.parametrize("body,param,words", [
    ({"input": "hi"}, None, "with messages"),
    ([1, 2], None, "with messages"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens", "greater than or equal"),
    ({"messages": "hi"}, "messages", ""),
    ({"prompt": "x", "suffix": "y"}, "suffix", "not supported"),
])  # fmt: skip
def test_bad_bodies_are_openais_400s(http, body, param, words):
    r = http.post("/invocations", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert words in err["message"]


def test_a_body_that_is_not_json_is_a_400(http):
    r = http.post(
        "/invocations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_the_body_is_checked_as_the_other_routes_check_theirs(http):
    # NaN is no JSON value: Python's own parser takes it, the routes' parser refuses it.
    r = http.post(
        "/invocations",
        content=b'{"prompt": "x", "temperature": NaN}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "is not a JSON value" in r.json()["error"]["message"]


def test_load_counts_the_requests_in_flight(http, server):
    assert http.get("/load").json() == {"server_load": 0}
    # Admitted as the routes admit a request of two samples (a real one on the demo model
    # ends before a client could ask).
    engine = server.app.state.sarathi.engine
    engine.admit(2, 0)
    try:
        assert http.get("/load").json() == {"server_load": 2}
    finally:
        engine.release(2)
    assert http.get("/load").json() == {"server_load": 0}
