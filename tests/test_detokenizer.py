"""Streaming detokenization is exact and its fast decode equals the tokenizer's."""

import random

import pytest
from models import byte_fallback_tokenizer
from transformers import AutoTokenizer

from sarathi.transformers_utils.demo import demo_model_path
from sarathi.transformers_utils.detokenizer import incremental_detokenizer, streaming_decoder


@pytest.fixture(scope="module", params=["demo", "tiny"])
def tokenizer(request, tiny_models):
    path = demo_model_path() if request.param == "demo" else tiny_models["llama"]
    return AutoTokenizer.from_pretrained(path)


def test_fast_decode_equals_the_tokenizers(tokenizer):
    fast = streaming_decoder(tokenizer)
    assert fast is not tokenizer
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(0, 12))]
        for skip in (True, False):
            assert fast.decode(ids, skip_special_tokens=skip) == tokenizer.decode(
                ids, skip_special_tokens=skip)


def test_streamed_text_equals_the_full_decode(tokenizer):
    rng = random.Random(1)
    fast = streaming_decoder(tokenizer)
    for _ in range(50):
        prompt = tokenizer.encode("The scheduler keeps")
        out = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 30))]
        detok = incremental_detokenizer(fast, prompt, skip_special_tokens=True)
        text = "".join(detok.step(t) for t in out) + detok.flush()
        full = tokenizer.decode(prompt + out, skip_special_tokens=True)
        assert full.endswith(text) and full[:len(full) - len(text)] == tokenizer.decode(
            prompt, skip_special_tokens=True)


def test_streaming_decodes_two_windows_per_token(tokenizer):
    """The window a step starts from is one the step before decoded: its text is kept."""
    fast = streaming_decoder(tokenizer)
    calls = 0

    class Counting:
        def decode(self, ids, skip_special_tokens=False):
            nonlocal calls
            calls += 1
            return fast.decode(ids, skip_special_tokens=skip_special_tokens)

    prompt = tokenizer.encode("The scheduler keeps")
    out = tokenizer.encode(" every decode moving while a long prompt is prefilled in chunks")
    detok = incremental_detokenizer(Counting(), prompt, skip_special_tokens=True)
    start = calls
    text = "".join(detok.step(t) for t in out) + detok.flush()
    assert calls - start <= 2 * len(out) + 1
    assert text == tokenizer.decode(prompt + out, skip_special_tokens=True)[
        len(tokenizer.decode(prompt, skip_special_tokens=True)) :
    ]


@pytest.mark.parametrize("stray_in_prompt", [False, True])
def test_a_stray_byte_does_not_stop_the_stream(stray_in_prompt):
    """A byte that makes an emitted character invalid UTF-8 (so its bytes decode to U+FFFDs)
    changed the window's text: the stream waited for it to come back and lost the rest."""
    tokenizer = byte_fallback_tokenizer()
    fast = streaming_decoder(tokenizer)
    crab = [3 + b for b in "🦀".encode()]
    prompt = [1, 260] + (crab if stray_in_prompt else [])
    out = ([] if stray_in_prompt else crab) + [3 + 0x87, 261, 260, 3 + 0x41]
    expected_len = len(tokenizer.decode(prompt + out)) - len(tokenizer.decode(prompt))
    streamed = incremental_detokenizer(fast, prompt)
    deltas = [streamed.step(t) for t in out] + [streamed.flush()]
    text = "".join(deltas)
    assert text.endswith("ok okA") and len(text) == expected_len
    # At once, nothing was emitted early: only the characters the stray byte broke differ.
    batch = incremental_detokenizer(fast, prompt)
    at_once = batch.step(out) + batch.flush()
    assert at_once.endswith("ok okA") and len(at_once) == expected_len
