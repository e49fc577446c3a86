"""OpenAI's optional request fields are nullable: a client may send ``"n": null`` or
``"stream": null`` for a field it does not set, and gets the default, not a 400."""

from __future__ import annotations

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"

# Every optional field of OpenAI's two requests, as a client that writes out its whole
# parameter set sends them (the reference lists each as "<type> or null").
COMMON_NULLS = {
    "frequency_penalty": None,
    "logit_bias": None,
    "n": None,
    "presence_penalty": None,
    "seed": None,
    "stop": None,
    "stream": None,
    "stream_options": None,
    "temperature": None,
    "top_p": None,
    "user": None,
}
CHAT_NULLS = {
    **COMMON_NULLS,
    "logprobs": None,
    "top_logprobs": None,
    "max_completion_tokens": None,
    "parallel_tool_calls": None,
    "response_format": None,
    "tool_choice": None,
    "tools": None,
    "metadata": None,
    "store": None,
    "service_tier": None,
}
COMPL_NULLS = {**COMMON_NULLS, "echo": None, "logprobs": None, "best_of": None, "suffix": None}


def test_chat_takes_nulls_as_defaults(http) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **CHAT_NULLS}
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")  # stream: null is false
    out = r.json()
    assert len(out["choices"]) == 1  # n: null is 1
    assert out["choices"][0]["logprobs"] is None  # logprobs: null is false


def test_completions_take_nulls_as_defaults(http) -> None:
    prompt = "a prompt the completion does not repeat"
    r = http.post(COMPL, json={"prompt": prompt, "max_tokens": 3, **COMPL_NULLS})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["choices"]) == 1
    choice = out["choices"][0]
    assert choice["logprobs"] is None
    assert not choice["text"].startswith(prompt)  # echo: null is off
    assert out["usage"]["completion_tokens"] == 3


def test_a_null_stream_option_is_its_default(http) -> None:
    body = {
        "prompt": "hi",
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": None},
    }
    r = http.post(COMPL, json=body)
    assert r.status_code == 200, r.text
    assert '"usage"' not in r.text  # include_usage: null is false


def test_a_required_field_stays_required(http) -> None:
    r = http.post(CHAT, json={"messages": None})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
