"""prompt_logprobs on both routes, and echo with logprobs on /v1/completions (the prompt's
tokens first, as OpenAI's), through the official openai client against the live server."""

from __future__ import annotations

import pytest

from live_server import MAX_MODEL_LEN

PROMPT = "Hello there, my old friend"


@pytest.fixture(scope="module")
def offline():
    from sarathi import LLM

    return LLM(model="demo", max_model_len=MAX_MODEL_LEN)


def _reference(offline, prompt, k):
    """The offline engine's prompt logprobs (the server must report the same)."""
    from sarathi import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=k)
    out = offline.generate([prompt], params, use_tqdm=False)[0]
    return out.prompt_token_ids, out.prompt_logprobs


def _check_body(body, ids, ref, k, tok):
    assert body[0] is None and len(body) == len(ids) == len(ref)
    for token, got, want in zip(ids[1:], body[1:], ref[1:], strict=True):
        assert str(token) in got and len(got) <= k + 1
        for key, entry in got.items():
            t = int(key)
            assert abs(entry["logprob"] - want[t].logprob) < 1e-5
            assert entry["rank"] == want[t].rank
            assert entry["decoded_token"] == tok.decode([t])
        assert sorted(e["rank"] for t, e in got.items() if t != str(token))[:k] == list(
            range(1, k + 1)
        )


def test_completions_and_chat_report_prompt_logprobs(client, offline):
    tok = offline.get_tokenizer()
    ids, ref = _reference(offline, PROMPT, 3)
    got = client.completions.create(
        model="demo",
        prompt=PROMPT,
        max_tokens=3,
        temperature=0,
        n=2,
        extra_body={"prompt_logprobs": 2},
    )
    for choice in got.choices:
        _check_body(choice.prompt_logprobs, ids, ref, 2, tok)
    chunks = list(
        client.completions.create(
            model="demo",
            prompt=PROMPT,
            max_tokens=3,
            temperature=0,
            stream=True,
            extra_body={"prompt_logprobs": 2},
        )
    )
    carrying = [c for c in chunks if getattr(c.choices[0], "prompt_logprobs", None)]
    assert len(carrying) == 1 and carrying[0] is chunks[0]
    assert carrying[0].choices[0].prompt_logprobs == got.choices[0].prompt_logprobs

    messages = [{"role": "user", "content": "Hi!"}]
    chat = client.chat.completions.create(
        model="demo", messages=messages, max_tokens=2, extra_body={"prompt_logprobs": 1}
    )
    (_, *rest) = chat.prompt_logprobs  # on the response, as vLLM puts it
    assert chat.prompt_logprobs[0] is None and len(chat.prompt_logprobs) == chat.usage.prompt_tokens
    assert all(1 <= len(entry) <= 2 for entry in rest)
    streamed = list(
        client.chat.completions.create(
            model="demo",
            messages=messages,
            max_tokens=2,
            stream=True,
            extra_body={"prompt_logprobs": 1},
        )
    )
    carrying = [c for c in streamed if getattr(c, "prompt_logprobs", None)]
    assert len(carrying) == 1 and carrying[0].prompt_logprobs == chat.prompt_logprobs
    plain = client.completions.create(model="demo", prompt=PROMPT, max_tokens=2)
    assert plain.choices[0].prompt_logprobs is None


def test_echo_with_logprobs_covers_the_prompt_then_the_completion(client, offline):
    ids, ref = _reference(offline, PROMPT, 2)
    kw = dict(model="demo", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    plain = client.completions.create(**kw)
    got = client.completions.create(echo=True, **kw)
    choice, lp, n = got.choices[0], got.choices[0].logprobs, len(ids)
    assert choice.text == PROMPT + plain.choices[0].text
    assert len(lp.tokens) == n + 5 == got.usage.prompt_tokens + got.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # as OpenAI's
    for j in range(1, n):
        assert abs(lp.token_logprobs[j] - ref[j][ids[j]].logprob) < 1e-5
        # The 2 most likely and the prompt token itself, as OpenAI's (up to logprobs + 1).
        assert 1 <= len(lp.top_logprobs[j]) <= 3 and lp.tokens[j] in lp.top_logprobs[j]
    # The completion's part is the one without echo, its offsets running on (to float
    # rounding: the plain request reads its prompt's K/V from the prefix cache, computed in
    # other chunks than the echo request's, which scores the prompt and so skips the cache).
    assert lp.tokens[n:] == plain.choices[0].logprobs.tokens
    close = pytest.approx(plain.choices[0].logprobs.token_logprobs, abs=1e-5)
    assert lp.token_logprobs[n:] == close
    for mine, theirs in zip(lp.top_logprobs[n:], plain.choices[0].logprobs.top_logprobs, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5)
    _assert_offsets_index(choice.text, lp.tokens, lp.text_offset)
    assert "prompt_logprobs" not in choice.model_extra or choice.prompt_logprobs is None

    # Streamed: the prompt's chunk first, the same logprobs and text in all.
    chunks = [c.choices[0] for c in client.completions.create(echo=True, stream=True, **kw)]
    assert chunks[0].text == PROMPT and chunks[0].logprobs.tokens == lp.tokens[:n]
    assert "".join(c.text for c in chunks) == choice.text
    for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        joined = [v for c in chunks if c.logprobs for v in getattr(c.logprobs, field)]
        assert joined == getattr(lp, field), field


def test_echo_with_logprobs_for_several_prompts_and_choices(client, http):
    texts = ["abc def", "one two three"]
    prompts = [http.post("/tokenize", json={"prompt": t}).json()["tokens"] for t in texts]
    kw = dict(model="demo", prompt=prompts, max_tokens=3, temperature=0.8, seed=4, n=2)
    got = client.completions.create(echo=True, logprobs=0, **kw)
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    for c in got.choices:
        assert c.text.startswith(texts[c.index // 2])  # token-id prompts, decoded
        assert c.logprobs.token_logprobs[0] is None
        assert all(v is not None for v in c.logprobs.token_logprobs[1:])
        assert c.logprobs.top_logprobs[0] is None
        # logprobs=0: no alternatives, the token's own logprob only (as OpenAI's and vLLM's).
        for tok, value, top in zip(c.logprobs.tokens[1:], c.logprobs.token_logprobs[1:],
                                   c.logprobs.top_logprobs[1:], strict=True):
            assert top == {tok: value}
    streamed: dict[int, list] = {}
    for chunk in client.completions.create(echo=True, logprobs=0, stream=True, **kw):
        streamed.setdefault(chunk.choices[0].index, []).append(chunk.choices[0])
    for c in got.choices:
        parts = streamed[c.index]
        assert "".join(p.text for p in parts) == c.text
        assert [v for p in parts if p.logprobs for v in p.logprobs.token_logprobs] == (
            c.logprobs.token_logprobs
        )


def test_streamed_logprobs_0_cover_tokens_whose_text_is_held_back(client):
    # A long stop string holds text back, so some steps add tokens but no text.
    kw = dict(
        model="demo",
        prompt="Once upon",
        max_tokens=30,
        temperature=0,
        logprobs=0,
        stop=["q" * 16],
        extra_body={"ignore_eos": True},
    )
    chunks = list(client.completions.create(stream=True, **kw))
    assert sum(len(c.choices[0].logprobs.tokens) for c in chunks if c.choices[0].logprobs) == 30


def test_chat_echo_begins_the_reply_with_the_continued_message(client):
    """vLLM's echo on chat: when the reply continues the last message (an assistant prefill,
    or any last message without a generation prompt), it begins with that message's
    content, streamed or not; a new assistant turn echoes nothing. It was refused (400)."""
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}]
    common = dict(model="demo", max_tokens=3, temperature=0)
    cont = {"continue_final_message": True, "add_generation_prompt": False, "ignore_eos": True}

    def reply(messages, extra, stream=False):
        r = client.chat.completions.create(messages=messages, stream=stream, extra_body=extra,
                                           **common)
        if not stream:
            return r.choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in r if c.choices)

    plain = reply(prefill, cont)
    for stream in (False, True):
        assert reply(prefill, {**cont, "echo": True}, stream) == "Well," + plain
    turn = {"ignore_eos": True}
    assert reply(prefill[:1], {**turn, "echo": True}) == reply(prefill[:1], turn)
    # Without a generation prompt the user's message is the one continued.
    bare = {"add_generation_prompt": False, "ignore_eos": True}
    assert reply(prefill[:1], {**bare, "echo": True}) == "Hi" + reply(prefill[:1], bare)


def _assert_offsets_index(text, tokens, offsets):
    """Each token's text_offset is where it starts in the text; a token that writes part of
    a character (U+FFFD) where that character starts."""
    assert offsets == sorted(offsets) and len(offsets) == len(tokens)
    for tok, at in zip(tokens, offsets, strict=True):
        if "\ufffd" not in tok:
            assert text.startswith(tok, at), (text, tokens, offsets)


def test_text_offsets_of_characters_spelled_in_several_tokens(client):
    """Byte-level tokens spell \u00e9 in two tokens and an emoji in four, each named U+FFFD:
    offsets counted their names' lengths, so from the first such character on they ran past
    the text (the prompt's "b" at character 3 was given 7)."""
    prompt = "a\u00e9\U0001f600b"
    kw = dict(model="demo", prompt=prompt, max_tokens=3, temperature=0, logprobs=0, echo=True)
    got = client.completions.create(**kw)
    lp, text = got.choices[0].logprobs, got.choices[0].text
    assert lp.tokens[:8] == ["a"] + ["\ufffd"] * 6 + ["b"], lp.tokens
    assert lp.text_offset[:8] == [0, 1, 1, 2, 2, 2, 2, 3]
    _assert_offsets_index(text, lp.tokens, lp.text_offset)
    chunks = [c.choices[0] for c in client.completions.create(stream=True, **kw)]
    joined = [v for c in chunks if c.logprobs for v in c.logprobs.text_offset]
    assert joined == lp.text_offset
