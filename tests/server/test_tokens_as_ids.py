"""vLLM's return_tokens_as_token_ids (the request field and --return-tokens-as-token-ids):
logprobs name tokens "token_id:<id>", so that tokens whose text is not whole (part of a
character) stay told apart."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server

COMPL = "/v1/completions"
CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def ids_server() -> Iterator[LiveServer]:
    live = start_server(return_tokens_as_token_ids=True)
    yield live
    stop_server(live)


def _completion(http: httpx.Client, **extra) -> dict:
    body = {"prompt": "Hello", "max_tokens": 4, "logprobs": 2, "return_token_ids": True,
            "ignore_eos": True, **extra}  # fmt: skip
    resp = http.post(COMPL, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]


def _chat(http: httpx.Client, **extra) -> dict:
    body = {"messages": MSG, "max_tokens": 4, "logprobs": True, "top_logprobs": 2,
            "ignore_eos": True, **extra}  # fmt: skip
    resp = http.post(CHAT, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["logprobs"]


def _check_completion_names(choice: dict) -> None:
    lp = choice["logprobs"]
    assert lp["tokens"] == [f"token_id:{t}" for t in choice["token_ids"]]
    assert all(k.startswith("token_id:") for top in lp["top_logprobs"] for k in top)
    # Offsets run over the names, as vLLM's.
    assert lp["text_offset"] == [sum(map(len, lp["tokens"][:i])) for i in range(4)]


def _check_chat_names(lp: dict) -> None:
    for entry in lp["content"]:
        assert entry["token"].startswith("token_id:")
        assert entry["bytes"] == list(entry["token"].encode())
        assert all(t["token"].startswith("token_id:") for t in entry["top_logprobs"])


def test_the_request_field_names_tokens_by_id(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        _check_completion_names(_completion(http, return_tokens_as_token_ids=True))
        _check_chat_names(_chat(http, return_tokens_as_token_ids=True))
        plain = _completion(http)  # the server's default: text
        assert not any(t.startswith("token_id:") for t in plain["logprobs"]["tokens"])
        assert not _chat(http)["content"][0]["token"].startswith("token_id:")


def test_the_flag_names_tokens_by_id_unless_a_request_says_not(ids_server):
    with httpx.Client(base_url=ids_server.url, timeout=60) as http:
        _check_completion_names(_completion(http))
        _check_chat_names(_chat(http))
        text = _chat(http, return_tokens_as_token_ids=False)
        assert not text["content"][0]["token"].startswith("token_id:")
        resp = http.post(CHAT, json={"messages": MSG, "max_tokens": 3, "logprobs": True,
                                     "ignore_eos": True, "stream": True})  # fmt: skip
        chunks = [json.loads(x[6:]) for x in resp.text.splitlines() if x.startswith("data: {")]
        streamed = [e for c in chunks if c["choices"] and c["choices"][0].get("logprobs")
                    for e in c["choices"][0]["logprobs"]["content"]]  # fmt: skip
        assert len(streamed) == 3 and all(e["token"].startswith("token_id:") for e in streamed)


def test_responses_refuse_it(server):
    body = {"input": "hi", "return_tokens_as_token_ids": True}
    resp = httpx.post(server.url + "/v1/responses", json=body, timeout=60)
    assert resp.status_code == 400, resp.text
    assert "return_tokens_as_token_ids" in resp.json()["error"]["message"]
