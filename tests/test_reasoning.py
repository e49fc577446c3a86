"""Reasoning parsers on token ids (sarathi/reasoning.py), and structured outputs that
constrain only what follows the reasoning (the engine, on a tiny model whose tokenizer has
<think> and </think>)."""

from __future__ import annotations

import json

import pytest
from models import save_thinking_model

from sarathi.reasoning import (
    REASONING_PARSERS,
    ReasoningStream,
    make_reasoning_parser,
    split_output,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_thinking_model(str(tmp_path_factory.mktemp("thinking")))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from sarathi.transformers_utils.tokenizer import get_tokenizer

    return get_tokenizer(model_dir)


def _split(tokenizer, name, text, prompt="<|im_start|>assistant\n", kwargs=None):
    parser = make_reasoning_parser(name, tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    return split_output(parser, prompt_ids, kwargs, tokenizer.decode(ids), ids)


@pytest.mark.parametrize("name", REASONING_PARSERS)
@pytest.mark.parametrize("text, reasoning, content", [
    ("<think>the sky</think>Blue.", "the sky", "Blue."),
    # The template wrote <think> into the prompt: the output starts in reasoning.
    ("the sky</think>Blue.", "the sky", "Blue."),
    # No end tag (cut by max_tokens): all reasoning, no answer.
    ("<think>the sky is", "the sky is", None),
    ("the sky is", "the sky is", None),
    # Nothing after the end tag: the answer is null, as vLLM's.
    ("<think>done</think>", "done", None),
    # A later <think> is text of the answer.
    ("<think>a</think>b<think>c", "a", "b<think>c"),
])
def test_the_output_splits_at_the_end_tag(tokenizer, name, text, reasoning, content):
    got = _split(tokenizer, name, text)
    assert (got.reasoning, got.content) == (reasoning, content)


@pytest.mark.parametrize("name", REASONING_PARSERS)
def test_a_prompt_that_closed_the_reasoning_makes_the_output_all_answer(tokenizer, name):
    """Qwen3's template with enable_thinking false writes an empty think block."""
    got = _split(tokenizer, name, "Blue.", prompt="assistant\n<think>\n\n</think>\n\n")
    assert (got.reasoning, got.content, got.reasoning_tokens) == (None, "Blue.", 0)
    # A prompt whose last tag opens reasoning is reasoning, even after an earlier close.
    got = _split(tokenizer, name, "x</think>y", prompt="<think>a</think> then <think>")
    assert (got.reasoning, got.content) == ("x", "y")


def test_qwen3_reads_enable_thinking_false_as_no_reasoning(tokenizer):
    off = {"enable_thinking": False}
    got = _split(tokenizer, "qwen3", "the sky is blue", kwargs=off)
    assert (got.reasoning, got.content) == (None, "the sky is blue")
    # DeepSeek-R1's template has no such switch: its parser does not read it.
    got = _split(tokenizer, "deepseek_r1", "the sky is blue", kwargs=off)
    assert (got.reasoning, got.content) == ("the sky is blue", None)


def test_reasoning_tokens_count_the_tokens_between_the_tags(tokenizer):
    ids = tokenizer.encode("<think>ab cd</think>ef", add_special_tokens=False)
    inner = len(tokenizer.encode("ab cd", add_special_tokens=False))
    got = _split(tokenizer, "qwen3", "<think>ab cd</think>ef")
    assert got.reasoning_tokens == inner < len(ids)


def _stream(tokenizer, parser, ids, cuts, lag=0):
    """Feed ``ids`` in the pieces ``cuts`` makes, each with its text; ``lag`` holds the
    last characters of the text back until the next piece (as stop strings do)."""
    stream = ReasoningStream(parser.tags, True)
    text_so_far, told, reasoning, content = "", 0, [], []
    bounds = [0, *cuts, len(ids)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        final = i == len(bounds) - 2
        text_so_far = tokenizer.decode(ids[:b])
        upto = len(text_so_far) if final else max(told, len(text_so_far) - lag)
        piece = stream.feed(text_so_far[told:upto], ids[a:b], final=final)
        told = upto
        reasoning.append(piece.reasoning)
        content.append(piece.content)
        if piece.content:
            assert piece.answering
    return "".join(reasoning), "".join(content), stream.reasoning_tokens


@pytest.mark.parametrize("name", REASONING_PARSERS)
@pytest.mark.parametrize("text", [
    "<think>the sky, it is</think>Blue <b>it</b> is.",
    "plain thoughts</think>answer",
    "<think>no end at all",
])
@pytest.mark.parametrize("lag", [0, 3, 9])
def test_a_stream_split_anywhere_tells_what_the_whole_output_does(tokenizer, name, text, lag):
    parser = make_reasoning_parser(name, tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False)
    whole = split_output(parser, [], None, tokenizer.decode(ids), ids)
    expected = (whole.reasoning, whole.content or "", whole.reasoning_tokens)
    for cut in range(len(ids) + 1):  # two pieces, cut at every position
        assert _stream(tokenizer, parser, ids, [cut], lag) == expected, cut
    # a token at a time
    assert _stream(tokenizer, parser, ids, list(range(1, len(ids))), lag) == expected


def test_skipped_special_tags_split_at_the_piece_of_the_end_token(tmp_path):
    """Tags that are special tokens are missing from a text that skips special tokens: the
    split falls at the piece holding the end tag's token."""
    from sarathi.transformers_utils.tokenizer import get_tokenizer

    tok = get_tokenizer(save_thinking_model(str(tmp_path), special=True))
    parser = make_reasoning_parser("qwen3", tok)
    assert parser.tags.special
    ids = tok.encode("<think>ab</think>cd", add_special_tokens=False)
    end = ids.index(parser.tags.end_id)
    stream = ReasoningStream(parser.tags, True, tags_in_text=False)
    first = stream.feed(tok.decode(ids[: end + 1], skip_special_tokens=True), ids[: end + 1])
    second = stream.feed(tok.decode(ids[end + 1 :], skip_special_tokens=True), ids[end + 1 :])
    assert (first.reasoning, first.answering, second.content) == ("ab", True, "cd")


def test_a_tokenizer_without_the_tags_is_an_error_naming_the_token(tmp_path):
    from models import save_tiny_tokenizer

    from sarathi.transformers_utils.tokenizer import get_tokenizer

    save_tiny_tokenizer(str(tmp_path), 384)
    tok = get_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="no <think> token"):
        make_reasoning_parser("deepseek_r1", tok)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        make_reasoning_parser("qwen3", None)


def test_the_engine_refuses_to_start_without_the_tags(tiny_models):
    from sarathi import LLM

    with pytest.raises(ValueError, match="no <think> token"):
        LLM(model=tiny_models["qwen3"], reasoning_parser="qwen3")


# -- structured outputs after the reasoning ------------------------------------------------
def test_a_constrained_output_is_free_until_the_end_tag_then_valid_json(model_dir):
    """With a reasoning parser, the grammar starts at the token after </think>: the
    reasoning before it is free text (no mask), the answer after it matches the schema.
    A bias on </think> makes the random model close its reasoning within a few tokens."""
    from sarathi import LLM, SamplingParams
    from sarathi.sampling_params import StructuredOutputsParams

    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
              "maximum": 9}}, "required": ["n"]}
    spec = StructuredOutputsParams(json=schema)
    llm = LLM(model=model_dir, reasoning_parser="qwen3", max_model_len=256)
    end = llm.llm_engine.reasoning.tags.end_id
    params = SamplingParams(n=16, temperature=1.0, seed=3, max_tokens=60, logit_bias={end: 3.0},
                            structured_outputs=spec)
    outs = llm.generate([[5, 6, 7]], params)[0].outputs
    free_first = 0
    for c in outs:
        ids = list(c.token_ids)
        if end not in ids:
            continue
        k = ids.index(end)
        answer = llm.get_tokenizer().decode(ids[k + 1 :], skip_special_tokens=True)
        if c.finish_reason == "stop":
            assert json.loads(answer)["n"] in range(10), answer
        else:
            assert answer.startswith('{"n": ') or '{"n": '.startswith(answer), answer
        reasoning = llm.get_tokenizer().decode(ids[:k])
        free_first += k > 0 and not reasoning.startswith("{")
    assert free_first >= 2, [c.token_ids for c in outs]
    # Without the parser the grammar holds from the first token: every output is JSON.
    plain = LLM(model=model_dir, max_model_len=256)
    for c in plain.generate([[5, 6, 7]], params)[0].outputs:
        assert c.text.startswith('{"n": ') or '{"n": '.startswith(c.text), c.text


def test_a_prompt_that_closed_the_reasoning_is_constrained_from_the_first_token(model_dir):
    from sarathi import LLM, SamplingParams
    from sarathi.sampling_params import StructuredOutputsParams

    llm = LLM(model=model_dir, reasoning_parser="deepseek_r1", max_model_len=256)
    tok = llm.get_tokenizer()
    prompt = tok.encode("assistant\n<think>\n\n</think>\n\n", add_special_tokens=False)
    params = SamplingParams(n=4, temperature=1.0, seed=1, max_tokens=40,
                            structured_outputs=StructuredOutputsParams(choice=["yes", "no"]))
    for c in llm.generate([prompt], params)[0].outputs:
        assert c.text in ("yes", "no"), c.text
