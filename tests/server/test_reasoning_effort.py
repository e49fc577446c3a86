"""``reasoning_effort`` (chat, /tokenize) and ``reasoning.effort`` (the Responses API) reach
the chat template as its ``reasoning_effort`` variable where the template reads one (and as
its ``enable_thinking`` switch, tests/test_effort_variables.py); a template that reads
neither takes only "none", and any other effort is a 400. ``chat_template_kwargs`` on /v1/responses, as chat's."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest
from live_server import LiveServer, start_server, stop_server

# The efforts openai-python sends, and vLLM's "max".
EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
# Reads reasoning_effort (and a variable of its own, to show chat_template_kwargs arrive).
EFFORT_TEMPLATE = """\
{%- if reasoning_effort is defined %}[effort {{ reasoning_effort }}] {% endif %}
{%- if style is defined %}[style {{ style }}] {% endif %}
{%- for m in messages %}{{ m['role'] }}: {{ m['content'] }}
{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"""
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def effort_server(tmp_path_factory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("template") / "effort.jinja"
    path.write_text(EFFORT_TEMPLATE)
    live = start_server(chat_template=str(path))
    yield live
    stop_server(live)


@pytest.fixture
def eh(effort_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=effort_server.url, timeout=60) as c:
        yield c


def _prompt(h: httpx.Client, **body: Any) -> tuple[str, int]:
    """The text and length of the prompt /tokenize renders for ``MESSAGES`` and ``body``."""
    r = h.post("/tokenize", json={"messages": MESSAGES, **body})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    text = h.post("/detokenize", json={"tokens": tokens}).json()["prompt"]
    return text, len(tokens)


def _error(r: httpx.Response, param: str) -> str:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    return err["message"]


@pytest.mark.parametrize("effort", EFFORTS)
def test_the_effort_is_the_templates_variable(eh, effort):
    text, count = _prompt(eh, reasoning_effort=effort)
    assert text.startswith(f"[effort {effort}] user: hi"), text
    r = eh.post("/v1/chat/completions",
                json={"messages": MESSAGES, "max_tokens": 1, "reasoning_effort": effort})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == count
    r = eh.post("/v1/responses",
                json={"input": "hi", "max_output_tokens": 1, "reasoning": {"effort": effort}})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens"] == count
    assert r.json()["reasoning"]["effort"] == effort  # echoed as sent


def test_no_effort_leaves_the_variable_undefined(eh):
    text, _ = _prompt(eh)
    assert text.startswith("user: hi"), text
    assert _prompt(eh, reasoning_effort=None)[0] == text


def test_chat_template_kwargs_may_repeat_the_effort_but_not_contradict_it(eh):
    same = _prompt(eh, reasoning_effort="low", chat_template_kwargs={"reasoning_effort": "low"})
    assert same == _prompt(eh, reasoning_effort="low")
    # Alone, the template variable is passed as any other.
    assert _prompt(eh, chat_template_kwargs={"reasoning_effort": "low"}) == same
    body = {"messages": MESSAGES, "max_tokens": 1, "reasoning_effort": "high",
            "chat_template_kwargs": {"reasoning_effort": "low"}}  # fmt: skip
    for route in ("/v1/chat/completions", "/tokenize"):
        message = _error(eh.post(route, json=body), "reasoning_effort")
        assert "'high'" in message and "'low'" in message and "disagree" in message
    r = eh.post("/v1/responses", json={
        "input": "hi", "max_output_tokens": 1, "reasoning": {"effort": "high"},
        "chat_template_kwargs": {"reasoning_effort": "low"}})  # fmt: skip
    assert "disagree" in _error(r, "reasoning.effort")


def test_an_effort_the_sdk_does_not_define_is_refused(eh):
    r = eh.post("/v1/chat/completions",
                json={"messages": MESSAGES, "max_tokens": 1, "reasoning_effort": "extreme"})
    assert "xhigh" in _error(r, "reasoning_effort")
    r = eh.post("/v1/chat/completions",
                json={"messages": MESSAGES, "max_tokens": 1, "reasoning_effort": 3})
    assert r.status_code == 400, r.text  # fmt: skip


def test_the_openai_sdk_sends_the_effort(effort_server):
    import openai

    with openai.OpenAI(base_url=effort_server.base_url, api_key="unused", max_retries=0) as c:
        chat = c.chat.completions.create(
            model="demo", messages=MESSAGES, max_tokens=1, reasoning_effort="low"
        )
        response = c.responses.create(
            model="demo", input="hi", max_output_tokens=1, reasoning={"effort": "xhigh"}
        )
    assert chat.usage.prompt_tokens == _count(effort_server, "low")
    assert response.usage.input_tokens == _count(effort_server, "xhigh")
    assert response.reasoning.effort == "xhigh"


def _count(live: LiveServer, effort: str) -> int:
    with httpx.Client(base_url=live.url, timeout=60) as h:
        return _prompt(h, reasoning_effort=effort)[1]


@pytest.mark.parametrize("effort", [e for e in EFFORTS if e != "none"])
def test_a_template_without_the_variable_takes_no_effort_but_none(http, effort):
    """The demo model's template reads neither reasoning_effort nor enable_thinking: the
    effort could not be honoured, so it is a 400; "none" asks for nothing the template
    would do, and renders the prompt as if left out."""
    body = {"messages": MESSAGES, "max_tokens": 1}
    message = _error(http.post("/v1/chat/completions", json={**body, "reasoning_effort": effort}),
                     "reasoning_effort")  # fmt: skip
    assert "reads neither a reasoning_effort variable nor an enable_thinking" in message
    _error(http.post("/tokenize", json={"messages": MESSAGES, "reasoning_effort": effort}),
           "reasoning_effort")  # fmt: skip
    r = http.post("/v1/responses",
                  json={"input": "hi", "max_output_tokens": 1, "reasoning": {"effort": effort}})
    assert "enable_thinking" in _error(r, "reasoning.effort")  # fmt: skip
    plain = http.post("/tokenize", json={"messages": MESSAGES}).json()["tokens"]
    none = http.post("/tokenize", json={"messages": MESSAGES, "reasoning_effort": "none"})
    assert none.json()["tokens"] == plain
    r = http.post("/v1/chat/completions", json={**body, "reasoning_effort": "none"})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == len(plain)


def test_reasoning_effort_is_chats_name(http):
    """On /v1/responses the effort is reasoning.effort; the top-level name is refused there
    saying so, and on /v1/completions (no template) as a field of chat's."""
    r = http.post("/v1/responses", json={"input": "hi", "reasoning_effort": "none"})
    assert "reasoning.effort" in _error(r, "reasoning_effort")
    r = http.post("/v1/completions", json={"prompt": "hi", "reasoning_effort": "low"})
    assert "/v1/chat/completions" in _error(r, "reasoning_effort")


def test_responses_take_chat_template_kwargs_as_chat_does(eh):
    """vLLM's Responses requests carry chat_template_kwargs (they were refused here)."""
    styled = _prompt(eh, chat_template_kwargs={"style": "terse"})
    assert styled[0].startswith("[style terse] user: hi"), styled
    body = {"input": "hi", "max_output_tokens": 1}
    r = eh.post("/v1/responses", json={**body, "chat_template_kwargs": {"style": "terse"}})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens"] == styled[1]
    # The chat route's checks: a parameter of the template call, too many, not an object.
    for bad in ({"tokenize": True}, {f"v{i}": i for i in range(65)}, "style"):
        r = eh.post("/v1/responses", json={**body, "chat_template_kwargs": bad})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"].startswith("chat_template_kwargs"), r.text
        chat = eh.post("/v1/chat/completions",
                       json={"messages": MESSAGES, "max_tokens": 1, "chat_template_kwargs": bad})
        assert chat.status_code == 400 and chat.json()["error"]["param"] == r.json()["error"]["param"]
