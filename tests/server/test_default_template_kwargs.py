"""--default-chat-template-kwargs (vLLM's): template variables of every chat request, under
the request's own chat_template_kwargs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server

TEMPLATE = "{{ greeting | default('none') }}|{% for m in messages %}{{ m['content'] }}{% endfor %}"
MSG = [{"role": "user", "content": "x"}]


@pytest.fixture(scope="module")
def greeting() -> Iterator[LiveServer]:
    live = start_server(chat_template=TEMPLATE, default_chat_template_kwargs={"greeting": "HI"})
    yield live
    stop_server(live)


def _prompt(http: httpx.Client, **extra) -> str:
    ids = http.post("/tokenize", json={"messages": MSG, **extra}).json()["tokens"]
    return http.post("/detokenize", json={"tokens": ids}).json()["prompt"]


def test_the_defaults_reach_the_template_under_the_requests_own(greeting):
    with httpx.Client(base_url=greeting.url, timeout=60) as http:
        assert _prompt(http) == "HI|x"
        assert _prompt(http, chat_template_kwargs={"greeting": "BYE"}) == "BYE|x"
        body = {"messages": MSG, "max_tokens": 1}
        assert http.post("/v1/chat/completions", json=body).status_code == 200


def test_a_reserved_name_is_refused_at_start():
    with pytest.raises(ValueError, match="--default-chat-template-kwargs: .*tokenize"):
        start_server(default_chat_template_kwargs={"tokenize": True})


def test_the_flag_takes_a_json_object_only():
    from sarathi.entrypoints.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--default-chat-template-kwargs", '{"enable_thinking": false}']
    )
    assert args.default_chat_template_kwargs == {"enable_thinking": False}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--default-chat-template-kwargs", "[1]"])
