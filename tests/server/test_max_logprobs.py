"""--max-logprobs (vLLM's): the most logprobs, top_logprobs and prompt_logprobs a request may
ask for is the running engine's, not a bound fixed in the request models."""

from __future__ import annotations

import json

import httpx
import pytest

from live_server import start_server, stop_server

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
CAP = 2


@pytest.fixture(scope="module")
def capped():
    live = start_server({"max_logprobs": CAP})
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c
    stop_server(live)


@pytest.fixture(scope="module")
def uncapped():
    live = start_server({"max_logprobs": -1})
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c, live.engine.engine.shape.vocab_size
    stop_server(live)


def _bodies(k: int) -> list[tuple[str, dict, str]]:
    """(route, body, the field asking for ``k``) for every field the cap bounds, streamed
    and not."""
    compl = {"prompt": "x", "max_tokens": 1}
    chat = {"messages": MSG, "max_tokens": 1}
    out = [
        (COMPL, {**compl, "logprobs": k}, "logprobs"),
        (COMPL, {**compl, "prompt_logprobs": k}, "prompt_logprobs"),
        (COMPL, {**compl, "echo": True, "logprobs": k}, "logprobs"),
        (CHAT, {**chat, "logprobs": True, "top_logprobs": k}, "top_logprobs"),
        (CHAT, {**chat, "prompt_logprobs": k}, "prompt_logprobs"),
    ]
    return out + [(path, {**body, "stream": True}, param) for path, body, param in out]


@pytest.mark.parametrize("path,body,param", _bodies(CAP + 1))
def test_a_request_over_the_cap_is_a_400_naming_the_field_and_the_cap(capped, path, body, param):
    resp = capped.post(path, json=body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert err["message"].startswith(f"{param} {CAP + 1} is more than max_logprobs ({CAP})")
    assert "--max-logprobs" in err["message"]


@pytest.mark.parametrize("path,body,param", _bodies(CAP))
def test_a_request_at_the_cap_is_served(capped, path, body, param):
    resp = capped.post(path, json=body)
    assert resp.status_code == 200, resp.text
    if body.get("stream"):
        assert "data: [DONE]" in resp.text and '"error"' not in resp.text
        return
    choice = resp.json()["choices"][0]
    if param == "top_logprobs":
        assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == CAP
    elif param == "prompt_logprobs":
        prompt = choice.get("prompt_logprobs") or resp.json()["prompt_logprobs"]  # chat's
        assert all(len(entry) <= CAP + 1 for entry in prompt[1:])
    else:  # the k most likely and the token itself, as OpenAI's
        assert all(1 <= len(top) <= CAP + 1 for top in choice["logprobs"]["top_logprobs"] if top)


def test_minus_one_allows_up_to_the_vocabulary(uncapped):
    http, vocab = uncapped
    # Token ids: the entries are keyed by id, so each of the vocabulary's tokens shows.
    body = {"prompt": [5, 6], "max_tokens": 1, "prompt_logprobs": vocab}
    resp = http.post(COMPL, json=body)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["choices"][0]["prompt_logprobs"][1]) == vocab
    chat = {"messages": MSG, "max_tokens": 1, "logprobs": True, "top_logprobs": vocab}
    resp = http.post(CHAT, json=chat)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == vocab
    over = http.post(COMPL, json={**body, "prompt_logprobs": vocab + 1})
    assert over.status_code == 400, over.text
    err = over.json()["error"]
    assert err["param"] == "prompt_logprobs"
    assert f"more than the vocabulary's size ({vocab})" in err["message"]


@pytest.mark.parametrize("path,body,param", _bodies(-1))
def test_minus_one_past_the_cap_is_a_400_naming_the_vocabulary(capped, path, body, param):
    resp = capped.post(path, json=body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param
    assert err["message"].startswith(f"{param} -1 (the whole vocabulary, ")
    assert f"is more than max_logprobs ({CAP})" in err["message"]


@pytest.mark.parametrize("path,body,param", _bodies(-2))
def test_below_minus_one_is_a_400(capped, path, body, param):
    resp = capped.post(path, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_minus_one_asks_for_the_whole_vocabulary_where_the_cap_allows(uncapped):
    http, vocab = uncapped
    body = {"prompt": [5, 6], "max_tokens": 1, "prompt_logprobs": -1, "logprobs": -1}
    resp = http.post(COMPL, json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert len(choice["prompt_logprobs"][1]) == vocab
    # Keyed by text, tokens that decode alike share an entry: at most the vocabulary.
    assert 1 < len(choice["logprobs"]["top_logprobs"][0]) <= vocab
    chat = {"messages": MSG, "max_tokens": 1, "logprobs": True, "top_logprobs": -1}
    for stream in (False, True):
        resp = http.post(CHAT, json={**chat, "stream": stream})
        assert resp.status_code == 200, resp.text
        if not stream:
            top = resp.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            assert len(top) == vocab
            continue
        chunks = [json.loads(line[6:]) for line in resp.text.splitlines()
                  if line.startswith("data: {")]  # fmt: skip
        tops = [c["choices"][0]["logprobs"]["content"][0]["top_logprobs"] for c in chunks
                if c["choices"] and c["choices"][0].get("logprobs")]  # fmt: skip
        assert tops and len(tops[0]) == vocab


def test_the_openapi_schema_states_no_bound_of_its_own(capped):
    # A bound in the request models is fixed at import, wrong for any other cap (vLLM's
    # schema has none either): the routes check the engine's.
    schemas = capped.get("/openapi.json").json()["components"]["schemas"]
    for model, fields in (
        ("CompletionRequest", ("logprobs", "prompt_logprobs")),
        ("ChatCompletionRequest", ("top_logprobs", "prompt_logprobs")),
    ):
        for name in fields:
            field = schemas[model]["properties"][name]
            assert "maximum" not in json.dumps(field), (model, name, field)
            # -1: the whole vocabulary (vLLM's)
            assert {"type": "integer", "minimum": -1} in field["anyOf"], (model, name, field)
