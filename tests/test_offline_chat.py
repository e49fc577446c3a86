"""LLM.chat (vLLM's offline chat) and vLLM's prompt dicts in LLM.generate, on the demo model."""

from __future__ import annotations

import pytest

from sarathi import LLM, SamplingParams
from sarathi.entrypoints.openai_server.chat_template import chat_prompt_ids, request_template_kwargs
from sarathi.entrypoints.openai_server.protocol import ChatMessage
from sarathi.transformers_utils.chat import conversation_ids

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
]


@pytest.fixture(scope="module")
def llm():
    llm = LLM("demo", max_num_seqs=8)
    yield llm
    llm.engine.shutdown()


def _ids(out):
    return out.outputs[0].token_ids


def test_chat_renders_as_the_server_and_generates_as_generate(llm):
    tok = llm.get_tokenizer()
    ids = conversation_ids(tok, MESSAGES, None)
    assert ids == chat_prompt_ids(tok, [ChatMessage(**m) for m in MESSAGES], None)
    (out,) = llm.chat(MESSAGES, GREEDY)
    assert out.prompt_token_ids == ids
    assert out.prompt == tok.decode(ids, skip_special_tokens=False)  # the rendered text
    assert MESSAGES[-1]["content"] in out.prompt
    assert _ids(out) == _ids(llm.generate({"prompt_token_ids": ids}, GREEDY)[0])


def test_a_batch_of_conversations_in_order_and_text_parts_joined(llm):
    parts = [
        MESSAGES[0],
        {"role": "user", "content": [{"type": "text", "text": "Name a"},
                                     {"type": "text", "text": "colour."}]},
    ]  # fmt: skip
    joined = [MESSAGES[0], {"role": "user", "content": "Name a\ncolour."}]  # as vLLM joins
    other = [{"role": "user", "content": "Count to three."}]
    outs = llm.chat([MESSAGES, other, parts], GREEDY)
    assert [_ids(o) for o in outs] == [
        _ids(llm.chat(MESSAGES, GREEDY)[0]),
        _ids(llm.chat(other, GREEDY)[0]),
        _ids(llm.chat(joined, GREEDY)[0]),
    ]
    assert outs[2].prompt_token_ids == llm.chat(joined, GREEDY)[0].prompt_token_ids


def test_a_plain_string_in_a_content_list_is_a_text_part_as_in_vllm(llm):
    # It was refused as "content parts of type 'str'", though vLLM's chat takes it.
    mixed = [{"role": "user", "content": ["Name a", {"type": "text", "text": "colour."}]}]
    joined = [{"role": "user", "content": "Name a\ncolour."}]
    assert llm.chat(mixed, GREEDY)[0].prompt_token_ids == (
        llm.chat(joined, GREEDY)[0].prompt_token_ids
    )


def test_continue_final_message_leaves_the_reply_open(llm):
    tok = llm.get_tokenizer()
    partial = [*MESSAGES, {"role": "assistant", "content": "It is"}]
    (out,) = llm.chat(partial, GREEDY, continue_final_message=True, add_generation_prompt=False)
    assert tok.decode(out.prompt_token_ids).endswith("It is")
    # add_generation_prompt's default gives way to continue_final_message, as on the server.
    (same,) = llm.chat(partial, GREEDY, continue_final_message=True)
    assert same.prompt_token_ids == out.prompt_token_ids


def test_continue_final_message_with_a_generation_prompt_raises(llm):
    """Asked for both, the generation prompt was dropped silently; vLLM raises ValueError
    (and the server answers 400)."""
    partial = [*MESSAGES, {"role": "assistant", "content": "It is"}]
    with pytest.raises(ValueError, match="continue_final_message and add_generation_prompt"):
        llm.chat(partial, GREEDY, continue_final_message=True, add_generation_prompt=True)


def test_template_and_its_variables(llm):
    template = "{% if flag %}A: {% endif %}{{ messages[-1]['content'] }}"
    plain = llm.chat(MESSAGES, GREEDY, chat_template=template)[0].prompt_token_ids
    flagged = llm.chat(
        MESSAGES, GREEDY, chat_template=template, chat_template_kwargs={"flag": True}
    )[0].prompt_token_ids
    tok = llm.get_tokenizer()
    assert tok.decode(plain) == "Name a colour." and tok.decode(flagged) == "A: Name a colour."
    with pytest.raises(ValueError, match="tokenize"):
        llm.chat(MESSAGES, GREEDY, chat_template_kwargs={"tokenize": True})
    with pytest.raises(ValueError, match="chat template failed"):
        llm.chat(MESSAGES, GREEDY, chat_template="{{ raise_exception('no') }}")


def test_a_reasoning_effort_reaches_the_template_through_chat_template_kwargs(llm):
    """vLLM's LLM.chat has no reasoning_effort parameter: the variable is one of
    chat_template_kwargs, as any other (the server's reasoning_effort fills the same one)."""
    template = "{{ reasoning_effort | default('unset') }}: {{ messages[-1]['content'] }}"
    tok = llm.get_tokenizer()
    (out,) = llm.chat(MESSAGES, GREEDY, chat_template=template,
                      chat_template_kwargs={"reasoning_effort": "low"})  # fmt: skip
    assert tok.decode(out.prompt_token_ids) == "low: Name a colour."
    kwargs = request_template_kwargs(tok, template, None, "low", None)
    served = chat_prompt_ids(tok, [ChatMessage(**m) for m in MESSAGES], template,
                             template_kwargs=kwargs)  # fmt: skip
    assert served == out.prompt_token_ids


@pytest.mark.parametrize(
    "messages,match",
    [
        ([], None),
        ([{"content": "hi"}], "role"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
         "image_url"),
        ([{"role": "user", "content": 3}], "content"),
        # Rendered as "None" and as "" before; the server refuses both.
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "'text'"),
        ([{"role": "user", "content": [{"type": "text"}]}], "'text'"),
        ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], "refusal"),
        (["hi"], "message dicts"),
    ],
)  # fmt: skip
def test_bad_conversations_raise_value_errors(llm, messages, match):
    if not messages:
        assert llm.chat(messages, GREEDY) == []
        return
    with pytest.raises(ValueError, match=match):
        llm.chat(messages, GREEDY)


def test_an_assistants_refusal_parts_render_as_the_server_renders_them(llm):
    """OpenAI's assistant messages may carry refusal parts, sent back as they came: the
    server takes them as the message's text; LLM.chat raised for them."""
    messages = [{"role": "user", "content": "Tell me."},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
                {"role": "user", "content": "Please."}]  # fmt: skip
    tok = llm.get_tokenizer()
    served = chat_prompt_ids(tok, [ChatMessage(**m) for m in messages], None)
    assert "No." in tok.decode(served)
    assert llm.chat(messages, GREEDY)[0].prompt_token_ids == served


def test_vllms_prompt_types_are_importable_from_sarathi(llm):
    # `from vllm import TokensPrompt` ported to sarathi was an AttributeError.
    from sarathi import TextPrompt, TokensPrompt
    from sarathi.inputs import TokensPrompt as Tokens

    assert Tokens is TokensPrompt
    ids = llm.get_tokenizer().encode("Hello there")
    outs = llm.generate([TokensPrompt(prompt_token_ids=ids), TextPrompt(prompt="Hello there")],
                        GREEDY)  # fmt: skip
    assert outs[0].prompt_token_ids == outs[1].prompt_token_ids == ids
    assert _ids(outs[0]) == _ids(outs[1])


def test_no_chat_template(llm, monkeypatch):
    monkeypatch.setattr(llm.get_tokenizer(), "chat_template", None)
    with pytest.raises(ValueError, match="no chat template"):
        llm.chat(MESSAGES, GREEDY)


def test_generate_takes_vllm_prompt_dicts(llm):
    tok = llm.get_tokenizer()
    ids = tok.encode("Hello there")
    text = _ids(llm.generate("Hello there", GREEDY)[0])
    assert _ids(llm.generate({"prompt": "Hello there"}, GREEDY)[0]) == text
    outs = llm.generate([{"prompt_token_ids": ids}, "Hello there", ids], GREEDY)
    assert [_ids(o) for o in outs] == [_ids(llm.generate(ids, GREEDY)[0]), text, _ids(outs[0])]
    # vLLM's TokensPrompt may carry the ids' text: the ids are generated from, the text is
    # the output's prompt (it was refused, "give one of 'prompt' and 'prompt_token_ids'").
    both = {"prompt": "Hello there", "prompt_token_ids": ids}
    (out,) = llm.generate(both, GREEDY)
    assert out.prompt == "Hello there" and out.prompt_token_ids == ids
    assert _ids(out) == _ids(outs[0])
    (cut,) = llm.generate({"prompt": "Hi", "prompt_token_ids": ids[:1]}, GREEDY)
    assert cut.prompt == "Hi" and cut.prompt_token_ids == ids[:1]
    for bad, match in [
        ({"prompt": "x", "multi_modal_data": {}}, "multi_modal_data"),
        ({"prompt": 3, "prompt_token_ids": [1]}, "their text"),
        ({}, "one of"),
        ([None], "prompt 0"),
        (["ok", 3.5], "prompt 1"),
        ([[1, "a"]], "prompt 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            llm.generate(bad, GREEDY)


# Qwen3's way with a call's arguments: text is written as it is, an object as JSON.
ARGS_TEMPLATE = (
    "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.name }}:"
    "{% if c.function.arguments is string %}{{ c.function.arguments }}"
    "{% else %}{{ c.function.arguments | tojson }}{% endif %};{% endfor %}{% endfor %}"
)


@pytest.mark.parametrize("arguments", ["", "  "])
def test_empty_tool_call_arguments_reach_the_template_as_an_empty_object(llm, arguments):
    """A call of a tool without parameters, sent back with arguments "" (as vLLM takes it:
    {}); as text, Qwen3's template wrote the call as '"arguments": }'."""
    call = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": arguments}}
    messages = [{"role": "user", "content": "Time?"},
                {"role": "assistant", "content": None, "tool_calls": [call]}]  # fmt: skip
    tok = llm.get_tokenizer()
    served = chat_prompt_ids(tok, [ChatMessage(**m) for m in messages], ARGS_TEMPLATE)
    assert tok.decode(served) == "now:{};"
    (out,) = llm.chat(messages, GREEDY, chat_template=ARGS_TEMPLATE)
    assert out.prompt_token_ids == served


# Qwen3's way with an earlier turn's reasoning: a <think> block before the reply.
REASONING_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}:"
    "{% if m.reasoning_content is string %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{% if m.reasoning is string %}[{{ m.reasoning }}]{% endif %}{{ m.content }};{% endfor %}"
)


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_an_assistants_reasoning_renders_as_the_server_renders_it(llm, key):
    """An assistant message's reasoning (vLLM's ``reasoning``, or ``reasoning_content``) is
    the template's under both names, as vLLM's chat gives it and the server renders it; a
    user message's is not the template's, as in vLLM. Passed through as it came, a
    ``reasoning`` never reached Qwen3's template, which reads ``reasoning_content``."""
    messages = [
        {"role": "user", "content": "Hi", key: "ignored"},
        {"role": "assistant", "content": "Hello", key: "r1"},
        {"role": "user", "content": "More"},
    ]
    tok = llm.get_tokenizer()
    served = chat_prompt_ids(
        tok, [ChatMessage(**m) for m in messages], REASONING_TEMPLATE, add_generation_prompt=False
    )
    assert tok.decode(served) == "user:Hi;assistant:<think>r1</think>[r1]Hello;user:More;"
    (out,) = llm.chat(messages, GREEDY, chat_template=REASONING_TEMPLATE,
                      add_generation_prompt=False)  # fmt: skip
    assert out.prompt_token_ids == served
    bad = [{"role": "assistant", "content": "a", key: 1}]
    with pytest.raises(ValueError, match=key):
        llm.chat(bad, GREEDY, chat_template=REASONING_TEMPLATE)
