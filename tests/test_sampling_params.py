import pytest

from sarathi import SamplingParams


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -2), ("top_k", True),
    ("min_p", 1.5), ("n", 0), ("max_tokens", 0), ("max_tokens", -3), ("min_tokens", -1),
    ("presence_penalty", 3.0), ("frequency_penalty", -2.5), ("repetition_penalty", 0.0),
    ("logprobs", -2), ("stop", [""]), ("stop_token_ids", [-1]),
    ("temperature", float("nan")), ("temperature", float("inf")),
    ("repetition_penalty", float("nan")), ("top_p", float("nan")),
    ("seed", 2**64), ("seed", True), ("top_k", 2**70),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_logprobs_have_no_cap_but_the_engines():
    # As vLLM's: the engine that takes the request caps them (LLM(max_logprobs=...)); a
    # bound here, fixed at 20, refused what an engine started with a larger cap allows.
    params = SamplingParams(logprobs=50, prompt_logprobs=1000)
    assert (params.logprobs, params.prompt_logprobs) == (50, 1000)


def test_min_tokens_cannot_exceed_max_tokens():
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=10, max_tokens=5)


def test_stop_accepts_a_string():
    assert SamplingParams(stop="###").stop_list == ("###",)


def test_stop_is_kept_as_a_list_as_vllm_keeps_it():
    # vLLM code extends it in place; None had no append and a string would append letters.
    assert SamplingParams().stop == [] and SamplingParams(stop="###").stop == ["###"]
    params = SamplingParams(stop=("a", "b"))
    params.stop.append("c")
    params.verify()  # as the engine does when it takes the request
    assert params.stop == ["a", "b", "c"] and params.stop_list == ("a", "b", "c")


@pytest.mark.parametrize("kwargs,field", [
    ({"stop": 123}, "stop"), ({"stop_token_ids": 5}, "stop_token_ids"),
    ({"temperature": "0.5"}, "temperature"), ({"top_p": None}, "top_p"),
    ({"n": True}, "n"), ({"max_tokens": True}, "max_tokens"), ({"min_tokens": False}, "min_tokens"),
    ({"stop_token_ids": [True]}, "stop_token_ids"), ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"skip_special_tokens": None}, "skip_special_tokens"), ({"detokenize": 0}, "detokenize"),
    ({"include_stop_str_in_output": 1}, "include_stop_str_in_output"),
])
def test_wrong_types_are_value_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_top_k_zero_and_minus_one_disable_it_and_zero_is_the_default():
    # vLLM's default is 0 (-1 its older spelling); a generation_config.json with "top_k": 0
    # must not make every default request invalid.
    assert SamplingParams().top_k == 0
    assert SamplingParams(top_k=0).top_k == 0 and SamplingParams(top_k=-1).top_k == -1


def test_seed_minus_one_is_no_seed():
    assert SamplingParams(seed=-1).seed is None
    assert SamplingParams(seed=-2).seed == -2


def test_vllm_detokenize_fields_are_accepted():
    p = SamplingParams(detokenize=False, spaces_between_special_tokens=False)
    assert not p.detokenize and not p.spaces_between_special_tokens
    with pytest.raises(ValueError, match="detokenize"):
        SamplingParams(detokenize=False, stop=["x"])


@pytest.mark.parametrize("value", [0, -2, True, 2.0, "5"])
def test_truncate_prompt_tokens_is_at_least_one_or_minus_one(value):
    with pytest.raises(ValueError, match="truncate_prompt_tokens"):
        SamplingParams(truncate_prompt_tokens=value)
    assert SamplingParams(truncate_prompt_tokens=-1).truncate_prompt_tokens == -1


def test_vllm_fields_at_their_neutral_values_are_accepted():
    # vLLM code spelling these out failed with "unexpected keyword argument".
    from sarathi.sampling_params import RequestOutputKind

    p = SamplingParams(
        n=2, best_of=2, logits_processors=[], guided_decoding=None,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    assert p.best_of == 2 and p.output_kind is RequestOutputKind.FINAL_ONLY
    assert SamplingParams(best_of=None, logits_processors=None).n == 1


@pytest.mark.parametrize("kwargs,match", [
    ({"n": 2, "best_of": 1}, "best_of must be >= n"),
    ({"n": 1, "best_of": 3}, "best_of other than n .* ask for n=best_of"),
    ({"best_of": True}, "best_of must be an integer"),
    ({"logits_processors": [lambda ids, logits: logits]}, "logits_processors .* use logit_bias"),
    ({"guided_decoding": {"regex": "a"}}, "guided_decoding .* structured_outputs="),
    ({"output_kind": 2}, "output_kind must be a RequestOutputKind"),
])
def test_unsupported_vllm_fields_are_refused_saying_what_to_use(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_clone_is_an_independent_equal_copy_as_vllms():
    # vLLM code copies params with .clone() (an AttributeError here before).
    p = SamplingParams(temperature=0.5, stop=["x"], stop_token_ids=[3], logit_bias={1: 2.0})
    q = p.clone()
    assert q == p and q is not p
    q.stop_token_ids.append(4)
    q.logit_bias[2] = 1.0
    assert p.stop_token_ids == [3] and p.logit_bias == {1: 2.0}


def test_numpy_numbers_are_taken_as_pythons_as_vllm_takes_them():
    # max_tokens=lengths[i] from an array was "must be an integer >= 1".
    np = pytest.importorskip("numpy")
    p = SamplingParams(
        n=np.int64(2), max_tokens=np.int64(5), seed=np.int32(3), top_k=np.int64(4),
        temperature=np.float32(0.5), top_p=np.float16(1), logprobs=np.int8(1),
        stop_token_ids=[np.int64(2)], allowed_token_ids=(np.int64(1), 2),
        logit_bias={np.int64(3): np.float32(1.5)},
    )  # fmt: skip
    assert (p.n, p.max_tokens, p.seed, p.top_k, p.logprobs) == (2, 5, 3, 4, 1)
    assert (p.temperature, p.top_p) == (0.5, 1.0)
    assert p.stop_token_ids == [2] and p.allowed_token_ids == [1, 2]
    assert p.logit_bias == {3: 1.5}
    values = [p.n, p.max_tokens, p.seed, p.top_k, p.logprobs, p.temperature, p.top_p,
              *p.stop_token_ids, *p.allowed_token_ids, *p.logit_bias, *p.logit_bias.values()]  # fmt: skip
    assert {type(v) for v in values} <= {int, float}
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=np.bool_(True))
