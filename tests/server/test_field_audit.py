"""Every field of OpenAI's (and vLLM's) request bodies is honoured or refused by name: none
is dropped silently. Unknown fields are accepted (clients send extras) and logged once."""

from __future__ import annotations

import json

import pytest

from sarathi.entrypoints.openai_server.field_audit import (
    ACCEPTED,
    RESPONSES_ACCEPTED,
    RESPONSES_UNSUPPORTED,
    UNSUPPORTED,
)

# A value that asks for something, per refused field.
ASKING = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "required",
    "functions": [{"name": "f"}],
    "function_call": "auto",
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {"search_context_size": "low"},
    "reasoning_effort": "high",
    "verbosity": "low",
    "moderation": {"model": "omni-moderation-latest"},
    "store": True,
    "service_tier": "flex",
    "use_beam_search": True,
    "logits_processors": ["x"],
    "guided_whitespace_pattern": " ",
    "chat_template_kwargs": {"x": 1},
    "chat_template": "{{ messages }}",
    "length_penalty": 0.5,
    "return_tokens_as_token_ids": True,
    "return_token_ids": True,
    "mm_processor_kwargs": {"x": 1},
    "prompt_embeds": "AAAA",
    "kv_transfer_params": {"x": 1},
    "vllm_xargs": {"x": 1},
    "truncation_side": "right",
    "logprob_token_ids": [5, 6],
    "repetition_detection": {"max_pattern_size": 8, "min_count": 3},
    "max_repetition_pattern_size": 8,
    "min_repetition_pattern_size": 2,
    "repetition_min_count": 3,
    "thinking_token_budget": 64,
    "ec_transfer_params": {"x": 1},
    "max_completion_tokens": 40,
    "top_logprobs": 3,
    "best_of": 3,
    "suffix": "x",
    "max_output_tokens": 4,
    "instructions": "Be brief.",
}
MESSAGES = [{"role": "user", "content": "hi"}]
# Refused on /v1/completions only: the chat route honours them.
CHAT_ONLY = {"tools", "tool_choice", "chat_template_kwargs", "reasoning_effort"}
CHAT_ONLY |= {"max_completion_tokens", "top_logprobs"}
# Fields of the completions route (honoured there) refused on chat.
COMPLETIONS_ONLY = {"best_of", "suffix", "return_token_ids"}
# Fields both routes honour (refused on /v1/responses): tests/server/test_tokens_as_ids.py.
BOTH = {"return_tokens_as_token_ids"}


def test_the_table_covers_every_refused_field():
    assert set(ASKING) == set(UNSUPPORTED)


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_a_field_that_asks_for_what_is_not_done_is_refused_by_name(http, route, name):
    if route == "/v1/chat/completions" and name in CHAT_ONLY:
        pytest.skip(f"{name} is a field of the chat route (tests/server/test_tools.py)")
    if route == "/v1/completions" and name in COMPLETIONS_ONLY:
        pytest.skip(f"{name} is a field of the completions route")
    if name in BOTH:
        pytest.skip(f"{name} is a field of both routes")
    body = {"prompt": "hi"} if route == "/v1/completions" else {"messages": MESSAGES}
    body.update({"max_tokens": 2, name: ASKING[name]})
    r = http.post(route, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == name and name in err["message"]
    # The table's message as written, then what to do: no words glued onto its end (it read
    # "... send tools by this server" and "... (store must be false) by this server").
    assert err["message"] == f"{UNSUPPORTED[name][1]}; remove '{name}'"


def test_an_empty_web_search_options_is_refused(http):
    """Every option of a web search has a default, so {} asks for a search with them all."""
    body = {"messages": MESSAGES, "max_tokens": 2, "web_search_options": {}}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "web_search_options" and err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "text"}},
        {"web_search_options": None},
        {"tool_choice": "none"},
        {"store": False},
        {"service_tier": "auto"},
        {"modalities": ["text"]},
        {"logit_bias": {}},
        {"logit_bias": {"5": 10}},
        {"allowed_token_ids": [5, 6]},
        {"bad_words": ["x", "hello world"]},
        {"prompt_logprobs": 2},
        {"use_beam_search": False},
        {"truncation_side": "left"},
        {"thinking_token_budget": -1, "repetition_min_count": 0},
        *[{name: "x"} for name in sorted(ACCEPTED - {"parallel_tool_calls"})],
        {"parallel_tool_calls": False},
        {"prompt_cache_options": {"mode": "explicit", "ttl": "30m"}},
        {"prompt_cache_retention": "24h"},
        {"an_unknown_field": 1},
    ],
)
def test_defaults_and_harmless_fields_are_accepted(http, extra):
    r = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2, **extra})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "route,extra",
    [
        ("/v1/completions", {"max_completion_tokens": 40}),
        ("/v1/completions", {"top_logprobs": 3}),
        ("/v1/completions", {"max_output_tokens": 4}),
        ("/v1/completions", {"instructions": "Be brief."}),
        ("/v1/chat/completions", {"max_output_tokens": 4}),
        ("/v1/chat/completions", {"instructions": "Be brief."}),
        ("/v1/chat/completions", {"best_of": 3}),
        ("/v1/chat/completions", {"suffix": "x"}),
    ],
)
def test_another_routes_field_is_refused_not_dropped(http, route, extra):
    """A client written for another route sends its names for a bound or a part of the
    prompt; dropped, max_completion_tokens on /v1/completions gave 16 tokens and
    max_output_tokens on chat ran to the end of the context (OpenAI answers 400)."""
    (name,) = extra
    body = {"prompt": "hi"} if route == "/v1/completions" else {"messages": MESSAGES}
    r = http.post(route, json={**body, "ignore_eos": True, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == name and name in err["message"], err


@pytest.mark.parametrize(
    "route,extra",
    [
        ("/v1/completions", {"top_logprobs": 0}),
        ("/v1/chat/completions", {"best_of": 1}),
        ("/v1/chat/completions", {"suffix": ""}),
        ("/v1/chat/completions", {"max_output_tokens": None, "instructions": None}),
    ],
)
def test_another_routes_field_that_asks_nothing_is_taken(http, route, extra):
    body = {"prompt": "hi"} if route == "/v1/completions" else {"messages": MESSAGES}
    r = http.post(route, json={**body, "max_tokens": 2, **extra})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_spaces_between_special_tokens_false_is_taken(http, route):
    """Special tokens are decoded with no spaces between them (as vLLM decodes them with a
    fast tokenizer, whatever the flag), which is what false asks for: it was refused as
    "not supported", and true taken."""
    body = {"prompt": "hi"} if route == "/v1/completions" else {"messages": MESSAGES}
    body.update(max_tokens=3, ignore_eos=True, allowed_token_ids=[1], skip_special_tokens=False)
    texts = []
    for spaces in (False, True):
        r = http.post(route, json={**body, "spaces_between_special_tokens": spaces})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        texts.append(choice["text"] if "text" in choice else choice["message"]["content"])
    assert texts == ["<|im_start|>" * 3] * 2
    r = http.post(route, json={**body, "spaces_between_special_tokens": "no"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "spaces_between_special_tokens"


def test_an_image_part_and_a_tool_call_message_are_refused_clearly(http):
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    r = http.post("/v1/chat/completions", json={"messages": image})
    assert r.status_code == 400 and "image_url" in r.json()["error"]["message"]
    call = [{"role": "assistant", "content": None, "function_call": {"name": "f"}}]
    r = http.post("/v1/chat/completions", json={"messages": call})
    assert r.status_code == 400 and "tool_calls" in r.json()["error"]["message"]


def test_include_reasoning_is_a_known_field(http, server):
    """vLLM's include_reasoning (whether its reasoning parser's output is returned) is a
    field of chat: with no reasoning parser here the reasoning stays in the content either
    way, as in vLLM without one. It was logged as a field unknown to this server."""
    warned = server.app.state.sarathi.warned_fields
    for value in (False, True, None):
        body = {"messages": MESSAGES, "max_tokens": 2, "include_reasoning": value}
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
    assert "include_reasoning" not in warned
    body = {"messages": MESSAGES, "max_tokens": 2, "include_reasoning": "no"}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "include_reasoning", r.text


def test_strict_scalars(http):
    for bad in ({"max_tokens": "16"}, {"stream": "yes"}, {"temperature": "0.5"}):
        r = http.post("/v1/completions", json={"prompt": "hi", **bad})
        assert r.status_code == 400, (bad, r.text)


def test_logit_bias_and_allowed_token_ids_are_taken_and_checked(http):
    body = {"prompt": "steer", "max_tokens": 6, "temperature": 1.0, "seed": 1, "ignore_eos": True}
    for extra in ({"logit_bias": {"42": 100}}, {"allowed_token_ids": [7, 9]}):
        r = http.post("/v1/completions", json={**body, **extra})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 6
    for bad in ({"logit_bias": {"5": 1000}}, {"logit_bias": {"x": 1}}, {"allowed_token_ids": []}):
        r = http.post("/v1/completions", json={**body, **bad})
        assert r.status_code == 400, (bad, r.text)


def test_bad_words_are_taken_and_checked(http):
    tok = http.post("/tokenize", json={"prompt": " the"}).json()["tokens"]
    assert len(tok) == 1
    body = {"prompt": "steer", "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    pushed = {**body, "logit_bias": {str(tok[0]): 100}}
    r = http.post("/v1/completions", json=pushed)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == " the" * 6
    r = http.post("/v1/completions", json={**pushed, "bad_words": ["the"]})
    assert r.status_code == 200 and "the" not in r.json()["choices"][0]["text"]
    for bad in ({"bad_words": [""]}, {"bad_words": "the"}, {"bad_words": [3]}):
        r = http.post("/v1/completions", json={**body, **bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["param"].startswith("bad_words"), r.text


def test_options_that_leave_no_token_are_a_400_never_a_token_they_ban(http):
    """allowed_token_ids that bad_words or min_tokens ban entirely: a 400 naming
    allowed_token_ids before anything runs where the first token has none left; where a
    later one has none ("zz" bans z after z), a 400 output_constraint_failed, or in a
    stream an error event, and never a token outside allowed_token_ids."""
    (z,) = set(http.post("/tokenize", json={"prompt": "zz"}).json()["tokens"])
    body = {"prompt": "x", "max_tokens": 4, "allowed_token_ids": [z]}
    for first in ({"bad_words": ["z"]}, {"stop_token_ids": [z], "min_tokens": 2}):
        r = http.post("/v1/completions", json={**body, **first})
        assert r.status_code == 400, (first, r.text)
        assert r.json()["error"]["param"] == "allowed_token_ids", r.text
    later = {**body, "bad_words": ["zz"], "ignore_eos": True}
    r = http.post("/v1/completions", json=later)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "output_constraint_failed" and "no token was left" in err["message"]
    with http.stream("POST", "/v1/completions", json={**later, "stream": True}) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and '"output_constraint_failed"' in events[-2], events
    texts = "".join(c["text"] for e in events[:-2] for c in json.loads(e)["choices"])
    assert texts == "z", events


# Every field of OpenAI's request bodies (openai-python's CompletionCreateParams and
# CompletionCreateParams of chat), and the vLLM extras of its OpenAI server.
OPENAI_COMPLETIONS = """model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n
    presence_penalty seed stop stream stream_options suffix temperature top_p user""".split()
OPENAI_CHAT = """messages model audio frequency_penalty function_call functions logit_bias logprobs
    max_completion_tokens max_tokens metadata modalities moderation n parallel_tool_calls
    prediction presence_penalty prompt_cache_key prompt_cache_options prompt_cache_retention
    reasoning_effort response_format safety_identifier seed service_tier stop store stream
    stream_options temperature tool_choice tools top_logprobs top_p user verbosity
    web_search_options""".split()
VLLM_EXTRAS = """use_beam_search top_k min_p repetition_penalty length_penalty stop_token_ids
    include_stop_str_in_output ignore_eos min_tokens skip_special_tokens
    spaces_between_special_tokens truncate_prompt_tokens prompt_logprobs allowed_token_ids
    bad_words add_special_tokens response_format structured_outputs guided_json guided_regex
    guided_choice guided_grammar guided_decoding_backend guided_whitespace_pattern priority
    request_id logits_processors return_tokens_as_token_ids return_token_ids cache_salt
    kv_transfer_params vllm_xargs prompt_embeds truncation_side logprob_token_ids
    repetition_detection max_repetition_pattern_size min_repetition_pattern_size
    repetition_min_count thinking_token_budget ec_transfer_params""".split()
VLLM_CHAT_EXTRAS = """echo add_generation_prompt continue_final_message documents chat_template
    chat_template_kwargs mm_processor_kwargs include_reasoning""".split()
# openai-python's ResponseCreateParams (the Responses API), and the chat route's names a
# client may send there by mistake.
OPENAI_RESPONSES = """access_programs background background_options context_management
    conversation image include input instructions max_output_tokens max_tool_calls metadata
    model moderation parallel_tool_calls previous_response_id prompt prompt_cache_key
    prompt_cache_options prompt_cache_retention reasoning safety_identifier service_tier store
    stream stream_options temperature text tool_choice tools top_logprobs top_p truncation
    user""".split()
CHAT_NAMES = "messages max_tokens max_completion_tokens logprobs echo".split()


def _fields(model) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize(
    "module,model_name,names",
    [
        ("protocol", "CompletionRequest", OPENAI_COMPLETIONS + VLLM_EXTRAS),
        ("protocol", "ChatCompletionRequest", OPENAI_CHAT + VLLM_EXTRAS + VLLM_CHAT_EXTRAS),
        ("protocol_responses", "ResponsesRequest", OPENAI_RESPONSES + CHAT_NAMES + VLLM_EXTRAS),
    ],
)
def test_every_openai_and_vllm_field_is_honoured_or_refused(module, model_name, names):
    import importlib

    model = getattr(importlib.import_module(f"sarathi.entrypoints.openai_server.{module}"), model_name)
    if model_name == "ResponsesRequest":
        refused, accepted = set(RESPONSES_UNSUPPORTED), RESPONSES_ACCEPTED
    else:
        refused, accepted = set(UNSUPPORTED), ACCEPTED
    unaccounted = [n for n in names if n not in _fields(model) | refused | accepted]
    assert not unaccounted, f"{model_name}: neither honoured nor refused: {unaccounted}"


@pytest.mark.parametrize(
    "module,names",
    [
        ("openai.types.completion_create_params", OPENAI_COMPLETIONS),
        ("openai.types.chat.completion_create_params", OPENAI_CHAT),
    ],
)
def test_the_field_lists_are_the_installed_sdks(module, names):
    """A field a newer openai-python sends must be added above (and honoured or refused):
    the chat route took moderation as an unknown field and moderated nothing."""
    params = pytest.importorskip(module)
    sdk = set(params.CompletionCreateParamsBase.__annotations__)
    assert sdk <= set(names), sorted(sdk - set(names))


def test_the_responses_field_list_is_the_installed_sdks():
    """A field a newer openai-python sends must be added above (and honoured or refused)."""
    params = pytest.importorskip("openai.types.responses.response_create_params")
    sdk = set(params.ResponseCreateParamsBase.__annotations__)
    assert sdk <= set(OPENAI_RESPONSES), sorted(sdk - set(OPENAI_RESPONSES))
