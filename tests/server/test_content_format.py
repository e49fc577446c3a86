"""chat_template_content_format (vLLM's; the server's --chat-template-content-format): a
template that loops over a message's content parts gets them as a list, not a string whose
characters the loop would walk."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server
from sarathi import LLM, SamplingParams
from sarathi.transformers_utils.chat import content_format_of

PARTS = "{% for m in messages %}{% for p in m['content'] %}[{{ p['text'] }}]{% endfor %}{% endfor %}"
GUARDED = (
    "{% for m in messages %}{% if m.content is string %}<{{ m.content }}>{% else %}"
    "{% for p in m.content | selectattr('type', 'equalto', 'text') %}<{{ p.text }}>"
    "{% endfor %}{% endif %}{% endfor %}"
)
STRING = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
MSG = [{"role": "user", "content": "hi there"}]


@pytest.mark.parametrize("template,fmt", [
    (PARTS, "openai"), (GUARDED, "openai"), (STRING, "string"),
    ("{% for message in messages %}{{ message.role }}{% endfor %}", "string"),
])  # fmt: skip
def test_the_format_a_template_reads_is_found(template, fmt):
    assert content_format_of(template) == fmt


@pytest.fixture(scope="module")
def demo() -> Iterator[LLM]:
    llm = LLM("demo")
    yield llm
    llm.engine.shutdown()


def _prompt(llm: LLM, template: str, fmt: str) -> str:
    (out,) = llm.chat(MSG, SamplingParams(max_tokens=1), chat_template=template,
                      chat_template_content_format=fmt)  # fmt: skip
    return llm.engine.tokenizer.decode(out.prompt_token_ids)


def test_llm_chat_renders_each_format(demo):
    assert _prompt(demo, PARTS, "auto") == "[hi there]"
    assert _prompt(demo, PARTS, "openai") == "[hi there]"
    assert _prompt(demo, PARTS, "string") == "[]" * len("hi there")  # what "auto" avoids
    assert _prompt(demo, GUARDED, "auto") == _prompt(demo, GUARDED, "string") == "<hi there>"
    assert _prompt(demo, STRING, "auto") == "<hi there>"


@pytest.fixture(scope="module")
def parts_server() -> Iterator[LiveServer]:
    live = start_server(chat_template=PARTS)
    yield live
    stop_server(live)


def test_the_server_renders_parts_for_a_template_that_loops_over_them(parts_server):
    with httpx.Client(base_url=parts_server.url, timeout=60) as http:
        ids = http.post("/tokenize", json={"messages": MSG}).json()["tokens"]
        assert http.post("/detokenize", json={"tokens": ids}).json()["prompt"] == "[hi there]"
