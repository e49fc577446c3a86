"""The step codec gives back exactly what it was given: every field, every type."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sarathi import SamplingParams
from sarathi.core.scheduler_output import NewSequence, ScheduledChunk, StepInput, TokenMasks
from sarathi.executor.step_codec import (
    _ArrayWriter,
    _from_json,
    _to_json,
    decode_step,
    encode_step,
    params_from_json,
    params_to_json,
)
from sarathi.sampling_params import RequestOutputKind, StructuredOutputsParams

INT64 = st.integers(-(2**63), 2**63 - 1)
IDS = st.integers(0, 2**40)
TOKENS = st.integers(-1, 200_000)  # -1 is PENDING_TOKEN
SMALL = st.integers(0, 20)


def same(a, b, where="step"):
    """Equal values of identical types, all the way down (``==`` alone would take a numpy
    integer for an int, or a list for a tuple)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b), where
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# -- sampling options --------------------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
STRUCTURED = st.one_of(
    st.builds(StructuredOutputsParams, json=st.dictionaries(st.text(), JSON_VALUES, max_size=4)),
    st.builds(StructuredOutputsParams, json=st.text()),
    st.builds(StructuredOutputsParams, json_object=st.just(True)),
    st.builds(StructuredOutputsParams, regex=st.text(min_size=1)),
    st.builds(StructuredOutputsParams, choice=st.lists(st.text(), min_size=1, max_size=4)),
    st.builds(StructuredOutputsParams, grammar=st.text(min_size=1)),
)
NUMBER = st.integers(-2, 2) | st.floats(-2, 2)
WORDS = st.lists(st.text(min_size=1), max_size=3)


@st.composite
def sampling_params(draw) -> SamplingParams:
    options = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "n": st.integers(1, 4),
                "temperature": st.integers(0, 2) | st.floats(0, 2),
                "top_p": st.floats(0.01, 1),
                "top_k": st.just(-1) | st.integers(1, 100),
                "min_p": st.floats(0, 1),
                "seed": st.none() | INT64,
                "presence_penalty": NUMBER,
                "frequency_penalty": NUMBER,
                "repetition_penalty": st.floats(0.1, 3) | st.integers(1, 3),
                "stop": st.none() | st.text(min_size=1) | WORDS | WORDS.map(tuple),
                "stop_token_ids": st.lists(IDS, max_size=3) | st.lists(IDS, max_size=3).map(tuple),
                "max_tokens": st.none() | st.integers(20, 4096),
                "min_tokens": st.integers(0, 16),  # the default max_tokens
                "ignore_eos": st.booleans(),
                "logprobs": st.none() | SMALL,
                "prompt_logprobs": st.none() | SMALL,
                "skip_special_tokens": st.booleans(),
                "include_stop_str_in_output": st.booleans(),
                "logit_bias": st.none()
                | st.dictionaries(IDS, st.integers(-100, 100) | st.floats(-100, 100), max_size=4)
                # Long enough to travel as arrays: all ints, all floats.
                | st.dictionaries(IDS, st.integers(-100, 100), min_size=8, max_size=12)
                | st.dictionaries(IDS, st.floats(-100, 100), min_size=8, max_size=12),
                "allowed_token_ids": st.none()
                | st.lists(IDS, min_size=1, max_size=4)
                | st.lists(IDS, min_size=1, max_size=4).map(tuple)
                | st.lists(st.integers(0, 2**31 - 1) | IDS, min_size=8, max_size=20)
                | st.lists(IDS, min_size=8, max_size=20).map(tuple),
                "structured_outputs": st.none() | STRUCTURED,
                "bad_words": st.none() | WORDS | WORDS.map(tuple),
                "truncate_prompt_tokens": st.none() | st.just(-1) | st.integers(1, 10**6),
                "output_kind": st.sampled_from(list(RequestOutputKind)),
            },
        )
    )
    params = SamplingParams(**options)
    # Set by the engine after construction, as llm_engine does.
    params.bad_words_token_ids = draw(st.lists(st.lists(IDS, min_size=1, max_size=3), max_size=3))
    return params


@given(sampling_params())
@settings(max_examples=300, deadline=None)
def test_sampling_params_round_trip(params):
    import json

    # Through real JSON text, as the codec sends it.
    same(params_from_json(json.loads(json.dumps(params_to_json(params)))), params, "params")


@given(
    st.recursive(
        JSON_SCALARS,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(inner, max_size=3).map(tuple)
            | st.frozensets(JSON_SCALARS, max_size=3)
            | st.sets(st.integers() | st.text(), max_size=3)
            | st.dictionaries(st.integers() | st.text() | st.none(), inner, max_size=3)
            # Long enough for the arrays part (where their values allow).
            | st.lists(st.integers() | st.booleans(), min_size=8, max_size=10)
            | st.lists(st.integers(-(2**40), 2**40), min_size=8, max_size=10).map(tuple)
            | st.dictionaries(
                st.integers(), st.integers() | st.floats(allow_nan=False) | st.booleans(), min_size=8, max_size=10
            )
        ),
        max_leaves=12,
    ),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_tagged_values_round_trip(value, with_arrays):
    import json

    arrays = _ArrayWriter() if with_arrays else None
    text = json.dumps(_to_json(value, arrays))
    back = _from_json(json.loads(text), memoryview(b"".join(arrays.parts)) if arrays else None)
    if isinstance(value, (set, frozenset)):
        assert type(back) is type(value) and back == value
    else:
        same(back, value, "value")


def test_unknown_types_and_fields_are_refused():
    with pytest.raises(TypeError, match="bytes"):
        _to_json(b"x")
    d = params_to_json(SamplingParams())
    d["from_the_future"] = 1
    with pytest.raises(ValueError, match="from_the_future"):
        params_from_json(d)


# -- whole steps -------------------------------------------------------------------------

CHUNKS = st.builds(
    ScheduledChunk,
    seq_id=IDS,
    start=st.integers(0, 1 << 20),
    token_ids=st.lists(TOKENS, max_size=40),
    sample=st.booleans(),
    prompt_logprobs=st.none() | SMALL,
    next_prompt_token=st.none() | TOKENS,
    history_head=st.none() | st.lists(TOKENS, max_size=10),
)
NEW_SEQUENCES = st.builds(
    NewSequence,
    seq_id=IDS,
    params=sampling_params(),
    prompt_len=st.integers(1, 1 << 16),
    seed=st.none() | st.integers(),
)


@st.composite
def token_masks(draw) -> TokenMasks:
    rows = draw(st.integers(0, 5))
    words = draw(st.integers(0, 6))
    bits = np.array(
        draw(
            st.lists(st.integers(-(2**31), 2**31 - 1), min_size=rows * words, max_size=rows * words)
        ),
        dtype=np.int32,
    ).reshape(rows, words)
    return TokenMasks(
        np.array(draw(st.lists(SMALL, min_size=rows, max_size=rows)), dtype=np.int64), bits
    )


@st.composite
def decodes(draw) -> tuple[list[int], list[int], list[int]]:
    n = draw(st.integers(0, 30))
    return tuple(draw(st.lists(s, min_size=n, max_size=n)) for s in (IDS, IDS, TOKENS))


# One strategy per field of StepInput: a field the codec does not know fails the test below.
FIELDS = {
    "chunks": st.lists(CHUNKS, max_size=4),
    "new_sequences": st.lists(NEW_SEQUENCES, max_size=3),
    "preempted": st.lists(IDS, max_size=5),
    "finished": st.lists(IDS, max_size=5),
    "token_masks": st.none() | token_masks(),
    "masks_follow": st.booleans(),
    "cache_registrations": st.lists(st.tuples(IDS, IDS, IDS), max_size=5),
    "cache_evictions": st.lists(IDS, max_size=5),
    "prefix_hits": st.dictionaries(IDS, st.lists(IDS, max_size=5), max_size=4),
}
DECODE_FIELDS = ("decode_seq_ids", "decode_positions", "decode_tokens")


@st.composite
def step_inputs(draw) -> StepInput:
    values = {name: draw(strategy) for name, strategy in FIELDS.items()}
    values.update(zip(DECODE_FIELDS, draw(decodes())))
    return StepInput(**values)


def test_every_step_field_is_generated():
    """A new StepInput field fails here until the codec and FIELDS carry it."""
    assert {f.name for f in dataclasses.fields(StepInput)} == set(FIELDS) | set(DECODE_FIELDS)


@given(step_inputs())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_step_round_trip(step):
    message = encode_step(step)
    assert isinstance(message, bytes)
    same(decode_step(message), step)
    # From a bigger shared buffer too, as a rank reads it out of a ring slot.
    same(decode_step(memoryview(bytearray(message + b"\0" * 64))), step)


def test_a_message_of_another_format_is_refused():
    with pytest.raises(ValueError, match="format tag"):
        decode_step(b"\0" * 256)


def test_sequences_sharing_params_decode_to_one_shared_params():
    """A request's n sequences share one params object: the step carries it once and the
    rank gets one object back for all of them (so per-request work there is done once)."""
    shared = SamplingParams(
        n=3,
        allowed_token_ids=list(range(0, 300, 3)),
        logit_bias={i: i / 4 for i in range(40)},
        stop=[f"stop{i}" for i in range(20)],
        bad_words=["a", "b c"],
    )
    shared.bad_words_token_ids = [[1], [2, 3]]
    other = SamplingParams(logit_bias={i: -i for i in range(30)}, allowed_token_ids=(5, 6))
    step = StepInput(
        new_sequences=[NewSequence(i, shared, 7, i) for i in range(3)]
        + [NewSequence(10, other, 2, None)],
    )
    back = decode_step(encode_step(step))
    same(back, step)
    first, *rest, last = back.new_sequences
    assert all(s.params is first.params for s in rest)
    assert last.params is not first.params


def test_a_huge_params_shared_by_many_sequences_is_sent_once():
    params = SamplingParams(n=64, allowed_token_ids=list(range(200_000)))
    one = len(encode_step(StepInput(new_sequences=[NewSequence(0, params, 5, None)])))
    many = StepInput(new_sequences=[NewSequence(i, params, 5, i) for i in range(64)])
    message = encode_step(many)
    assert len(message) < 2 * one
    # The ids travel as int64s, not as JSON text with a tag per element.
    assert one < 8 * 200_000 + 4096
    back = decode_step(message)
    assert back.new_sequences[63].params.allowed_token_ids == list(range(200_000))
