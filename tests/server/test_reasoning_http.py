"""--reasoning-parser over HTTP: a tiny random Qwen3 whose tokenizer has <think> and
</think>, its outputs scripted by the prompt (a random model never closes its reasoning by
itself). Chat (streamed and not, include_reasoning, tools after the reasoning), the
Responses API's reasoning items, and the server without a parser."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
from live_server import start_server, stop_server
from models import save_thinking_model

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
# The prompt's key -> what the model writes.
SCRIPTS = {
    "sky": "<think>The sky scatters blue light.</think>It is blue.",
    "tool": "<think>Maybe <tool_call>{not a call}</tool_call> first.</think>" + CALL,
    "long": "<think>" + "and then " * 40,
    "nothink": "Just blue.",
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def scripted(engine: Any) -> None:
    """Every sequence whose prompt holds a key of SCRIPTS samples that script's tokens,
    then the end of text, whatever the model's logits say."""
    tok = engine.tokenizer
    plans = {
        key: tok.encode(text, add_special_tokens=False) + [engine.setup.eos_id]
        for key, text in SCRIPTS.items()
    }
    chosen: dict[int, list[int] | None] = {}
    process = engine.output_processor.process

    def plan(seq: Any) -> list[int] | None:
        if seq.seq_id not in chosen:
            prompt = tok.decode(seq.token_ids[: seq.prompt_len])
            chosen[seq.seq_id] = next((p for k, p in plans.items() if f"[{k}]" in prompt), None)
        return chosen[seq.seq_id]

    def forced(sampled: Any, indices: Any, result: Any, **kwargs: Any) -> Any:
        tokens = list(result.token_ids)
        for row, (seq, index) in enumerate(zip(sampled, indices)):
            script = plan(seq)
            if script is not None:
                tokens[row] = script[min(index - seq.prompt_len, len(script) - 1)]
        return process(sampled, indices, replace(result, token_ids=tokens), **kwargs)

    engine.output_processor.process = forced


@pytest.fixture(scope="module")
def thinking(tmp_path_factory):
    path = save_thinking_model(str(tmp_path_factory.mktemp("thinking")))
    live = start_server({"model": path, "reasoning_parser": "qwen3", "max_model_len": 512},
                        engine_hook=scripted, tool_call_parser="hermes",
                        served_model_name="x")
    yield live
    stop_server(live)


@pytest.fixture
def h(thinking):
    with httpx.Client(base_url=thinking.url, timeout=60) as c:
        yield c


def _chat(h: Any, key: str, **body: Any) -> Any:
    r = h.post("/v1/chat/completions", json={
        "model": "x", "messages": [{"role": "user", "content": f"[{key}]"}], "max_tokens": 100,
        **body})
    assert r.status_code == 200, r.text
    return r


def _chat_stream(h: Any, key: str, **body: Any) -> list[dict]:
    r = _chat(h, key, stream=True, **body)
    chunks = [json.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_chat_returns_the_reasoning_apart_from_the_answer(h):
    message = _chat(h, "sky").json()["choices"][0]["message"]
    assert message["reasoning"] == "The sky scatters blue light."
    assert message["content"] == "It is blue."
    assert "reasoning_content" not in message  # vLLM's current name only


def test_streamed_reasoning_comes_first_each_delta_with_its_own_field(h):
    deltas = _chat_stream(h, "sky")[1:]  # after the role chunk
    fields = [next(iter(d)) for d in deltas if d]
    assert all(len(d) <= 1 for d in deltas), deltas
    assert fields == sorted(fields, key=lambda f: f != "reasoning"), fields  # reasoning first
    assert "".join(d.get("reasoning", "") for d in deltas) == "The sky scatters blue light."
    assert "".join(d.get("content", "") for d in deltas) == "It is blue."


def test_include_reasoning_false_leaves_the_reasoning_out(h):
    message = _chat(h, "sky", include_reasoning=False).json()["choices"][0]["message"]
    assert "reasoning" not in message and message["content"] == "It is blue."
    deltas = _chat_stream(h, "sky", include_reasoning=False)
    assert not any("reasoning" in d for d in deltas)
    assert "".join(d.get("content", "") for d in deltas) == "It is blue."


def test_an_output_cut_before_the_end_tag_is_all_reasoning(h):
    choice = _chat(h, "long", max_tokens=10).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert choice["message"]["reasoning"].startswith("and then")
    deltas = _chat_stream(h, "long", max_tokens=10)
    assert "".join(d.get("reasoning", "") for d in deltas) == choice["message"]["reasoning"]
    assert not any(d.get("content") for d in deltas)


def test_enable_thinking_false_makes_the_output_all_answer(h):
    body = {"chat_template_kwargs": {"enable_thinking": False}}
    message = _chat(h, "nothink", **body).json()["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (None, "Just blue.")
    deltas = _chat_stream(h, "nothink", **body)
    assert not any("reasoning" in d for d in deltas)


def test_tool_calls_are_parsed_from_the_answer_only(h):
    """A call written in the reasoning is thinking, not a call."""
    choice = _chat(h, "tool", tools=[WEATHER], tool_choice="auto", max_tokens=400).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert "<tool_call>{not a call}" in choice["message"]["reasoning"]
    deltas = _chat_stream(h, "tool", tools=[WEATHER], tool_choice="auto", max_tokens=400)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [c["function"].get("name") for c in calls if c.get("id")] == ["get_weather"]
    assert "".join(d.get("reasoning", "") for d in deltas) == choice["message"]["reasoning"]


def test_chat_usage_has_no_reasoning_tokens_as_vllms(h):
    usage = _chat(h, "sky").json()["usage"]
    assert "completion_tokens_details" not in usage or not usage["completion_tokens_details"]


def _respond(h: Any, key: str, **body: Any) -> Any:
    return h.post("/v1/responses", json={"model": "x", "input": f"[{key}]",
                                         "max_output_tokens": 100, **body})


def test_a_response_has_a_reasoning_item_before_its_message(h):
    r = _respond(h, "sky")
    assert r.status_code == 200, r.text
    body = r.json()
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text",
                                     "text": "The sky scatters blue light."}]
    assert message["content"][0]["text"] == "It is blue."
    details = body["usage"]["output_tokens_details"]
    assert 0 < details["reasoning_tokens"] < body["usage"]["output_tokens"]


def test_a_responses_enable_thinking_false_makes_the_output_all_answer(h):
    """chat_template_kwargs on /v1/responses reach the template and the parser, as on chat."""
    r = _respond(h, "nothink", chat_template_kwargs={"enable_thinking": False})
    assert r.status_code == 200, r.text
    (message,) = r.json()["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Just blue."


def test_a_streamed_response_tells_the_reasoning_item_first(h):
    r = _respond(h, "sky", stream=True)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert deltas == "The sky scatters blue light."
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == deltas
    assert final["output"][1]["content"][0]["text"] == "It is blue."
    assert final["usage"] == _respond(h, "sky").json()["usage"]


def test_reasoning_items_sent_back_are_taken(h):
    first = _respond(h, "sky").json()["output"]
    again = _respond(h, "sky", input=[{"role": "user", "content": "[sky]"}, *first,
                                      {"role": "user", "content": "and?"}])
    assert again.status_code == 200, again.text
    assert again.json()["output"][0]["type"] == "reasoning"


def test_a_stored_reasoning_turn_continues_and_lists_its_items(h):
    # The store keeps the reasoning item with the turn: a previous_response_id continues
    # from it as from the same items sent back, and input_items lists it as sent.
    first = _respond(h, "sky").json()
    sent = _respond(h, "sky", input=[{"role": "user", "content": "[sky]"}, *first["output"],
                                     {"role": "user", "content": "and?"}]).json()
    chained = _respond(h, "sky", input=[{"role": "user", "content": "and?"}],
                       previous_response_id=first["id"])
    assert chained.status_code == 200, chained.text
    assert chained.json()["usage"]["input_tokens"] == sent["usage"]["input_tokens"]
    items = h.get(f"/v1/responses/{chained.json()['id']}/input_items",
                  params={"order": "asc"}).json()["data"]
    assert [i["type"] for i in items] == ["message", "reasoning", "message", "message"]
    assert items[1]["id"] == first["output"][0]["id"]
    assert items[1]["content"] == first["output"][0]["content"]


def test_without_a_parser_the_message_has_no_reasoning_field(http):
    r = http.post("/v1/chat/completions", json={
        "model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert "reasoning" not in r.json()["choices"][0]["message"]


@pytest.fixture(scope="module")
def special_tags(tmp_path_factory):
    """The thinking model with <think> and </think> as special tokens."""
    path = save_thinking_model(str(tmp_path_factory.mktemp("special")), special=True)
    live = start_server({"model": path, "reasoning_parser": "deepseek_r1", "max_model_len": 512},
                        engine_hook=scripted, served_model_name="x")
    yield live
    stop_server(live)


def test_skipped_special_tags_split_a_whole_output_at_the_end_token(special_tags):
    """A request that skips special tokens has no tags in its text: the answer still comes
    apart from the reasoning in a whole output (the split falls at the </think> token)."""
    with httpx.Client(base_url=special_tags.url, timeout=60) as h:
        message = _chat(h, "sky", skip_special_tokens=True).json()["choices"][0]["message"]
        output = _respond(h, "sky", skip_special_tokens=True).json()["output"]
    assert message["reasoning"] == "The sky scatters blue light."
    assert message["content"] == "It is blue."
    assert output[0]["content"][0]["text"] == "The sky scatters blue light."
    assert output[1]["content"][0]["text"] == "It is blue."


def test_a_stream_that_holds_back_the_end_tag_splits_as_the_whole_output(h, special_tags):
    """The chunk of the </think> token may carry no text (a stop string's possible start
    held back, or a skipped special tag): the split still falls at that token."""
    message = _chat(h, "sky", stop=["<x"]).json()["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (
        "The sky scatters blue light.", "It is blue.")
    deltas = _chat_stream(h, "sky", stop=["<x"])
    assert "".join(d.get("reasoning", "") for d in deltas) == message["reasoning"]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]
    with httpx.Client(base_url=special_tags.url, timeout=60) as other:
        deltas = _chat_stream(other, "sky", skip_special_tokens=True)
    assert "".join(d.get("reasoning", "") for d in deltas) == message["reasoning"]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]
