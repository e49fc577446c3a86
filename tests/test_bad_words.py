"""bad_words (vLLM's): a banned token never appears, however hard logit_bias pushes it, and
overlapped scheduling bans exactly what the one-step-at-a-time loop bans."""

import pytest

from sarathi import LLM, SamplingParams
from sarathi.engine.llm_engine import RequestError, bad_words_token_ids

PROMPTS = ["Hello there", "a b c", "The cache"]


@pytest.fixture(scope="module")
def engines():
    return {overlap: LLM(model="demo", overlap_scheduling=overlap) for overlap in (False, True)}


def _tokens(llm, params):
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    return [c.token_ids for o in outs for c in o.outputs]


def _pairs(ids):
    return set(zip(ids, ids[1:], strict=False))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_banned_tokens_never_appear_even_pushed_to_plus_100(engines, temperature):
    tok = engines[False].get_tokenizer()
    (single,) = tok.encode("ab", add_special_tokens=False)  # a one-token word
    double = tok.encode("zz", add_special_tokens=False)  # the same token twice
    assert len(double) == 2 and double[0] == double[1]
    z = double[0]
    base = dict(temperature=temperature, seed=5, max_tokens=16, ignore_eos=True, n=2)
    for overlap, llm in engines.items():
        # Without bad_words the bias wins every step.
        assert all(
            set(ids) == {single}
            for ids in _tokens(llm, SamplingParams(logit_bias={single: 100}, **base))
        )
        assert all(
            set(ids) == {z} for ids in _tokens(llm, SamplingParams(logit_bias={z: 100}, **base))
        )

    results = {}
    for overlap, llm in engines.items():
        banned = _tokens(llm, SamplingParams(logit_bias={single: 100}, bad_words=["ab"], **base))
        assert all(single not in ids for ids in banned)
        # "zz": z is banned only right after z, so it comes every other token.
        paired = _tokens(llm, SamplingParams(logit_bias={z: 100}, bad_words=["zz"], **base))
        for ids in paired:
            assert (z, z) not in _pairs(ids) and ids.count(z) >= len(ids) // 2, ids
        results[overlap] = (banned, paired)
    assert results[True] == results[False]


def test_a_word_is_banned_as_written_and_after_a_space(engines):
    llm = engines[False]
    tok = llm.get_tokenizer()

    def enc(text):
        return tok.encode(text, add_special_tokens=False)

    # " ab" is kept once, though both of its variants spell it.
    assert bad_words_token_ids(["the", " ab"], tok) == [enc("the"), enc(" the"), enc(" ab")]
    (space_the,) = enc(" the")  # "the" is two tokens, " the" one: banned at every step
    params = dict(temperature=0, max_tokens=12, ignore_eos=True, logit_bias={space_the: 100})
    assert set(_tokens(llm, SamplingParams(**params))[0]) == {space_the}
    for ids in _tokens(llm, SamplingParams(bad_words=["the"], **params)):
        assert space_the not in ids


def test_bad_words_are_validated_and_need_a_tokenizer():
    for bad in ([""], "ab", [1]):
        with pytest.raises(ValueError, match="bad_words"):
            SamplingParams(bad_words=bad)
    llm = LLM(model="demo", skip_tokenizer_init=True)
    with pytest.raises(RequestError, match="bad_words"):
        llm.engine.add_request([5, 6, 7], SamplingParams(bad_words=["ab"]))


def test_options_that_leave_no_first_token_are_refused(engines):
    """allowed_token_ids all banned at the first step (one-token bad words; the end of text
    and stop token ids while min_tokens is unmet): the sampler's row is all -inf, and its
    draw, token 0, was emitted though it is not allowed. Refused when the request is added."""
    llm = engines[False]
    (single,) = llm.get_tokenizer().encode("ab", add_special_tokens=False)
    eos = llm.get_tokenizer().eos_token_id
    for params in (
        SamplingParams(max_tokens=4, allowed_token_ids=[single], bad_words=["ab"]),
        SamplingParams(max_tokens=4, allowed_token_ids=[eos], min_tokens=2),
        SamplingParams(max_tokens=4, allowed_token_ids=[7], stop_token_ids=[7], min_tokens=1),
    ):
        with pytest.raises(RequestError, match="allowed_token_ids leaves no token"):
            llm.engine.add_request("x", params)
    # The end of text is allowed once min_tokens is met, or with ignore_eos when it is not.
    ok = SamplingParams(max_tokens=4, allowed_token_ids=[eos], min_tokens=2, ignore_eos=True)
    (out,) = llm.generate(["x"], ok, use_tqdm=False)
    assert out.outputs[0].token_ids == [eos] * 4 and out.outputs[0].finish_reason == "length"


@pytest.mark.parametrize("overlap", [False, True])
def test_options_that_leave_no_token_later_end_with_an_error(engines, overlap):
    """allowed_token_ids=[z] with the bad word "zz": z is allowed first, then banned, and
    nothing is left. The output ends "error" after its one valid token, not with a token
    outside allowed_token_ids; the same where min_tokens bans the end of text meanwhile."""
    llm = engines[overlap]
    tok = llm.get_tokenizer()
    z = tok.encode("zz", add_special_tokens=False)[0]
    eos = tok.eos_token_id
    for extra in ({"ignore_eos": True}, {"min_tokens": 3, "allowed_token_ids": [z, eos]}):
        params = {"allowed_token_ids": [z], "bad_words": ["zz"], "max_tokens": 6, "n": 2}
        params.update(extra)
        (out,) = llm.generate(["x"], SamplingParams(**params), use_tqdm=False)
        for c in out.outputs:  # the banned draw is not part of the output
            assert c.token_ids == [z] and c.finish_reason == "error", c
            assert c.text == "z"
        assert out.error is not None and "no token was left to sample at output token 2" in (
            out.error
        )
    assert not llm.engine.has_unfinished_requests()
