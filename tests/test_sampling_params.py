import pytest

from sarathi import SamplingParams


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", 0), ("top_k", -2),
    ("min_p", 1.5), ("n", 0), ("max_tokens", 0), ("max_tokens", -3), ("min_tokens", -1),
    ("presence_penalty", 3.0), ("frequency_penalty", -2.5), ("repetition_penalty", 0.0),
    ("logprobs", 50), ("stop", [""]), ("stop_token_ids", [-1]),
    ("temperature", float("nan")), ("temperature", float("inf")),
    ("repetition_penalty", float("nan")), ("top_p", float("nan")),
    ("seed", 2**64), ("seed", True),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_min_tokens_cannot_exceed_max_tokens():
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=10, max_tokens=5)


def test_stop_accepts_a_string():
    assert SamplingParams(stop="###").stop_list == ["###"]


@pytest.mark.parametrize("kwargs,field", [
    ({"stop": 123}, "stop"), ({"stop_token_ids": 5}, "stop_token_ids"),
    ({"temperature": "0.5"}, "temperature"), ({"top_p": None}, "top_p"),
])
def test_wrong_types_are_value_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)
