"""Delta outputs (``add_request(delta=True)``, vLLM's ``RequestOutputKind.DELTA``): every
output, the finished one too, holds what was added since the previous one, and they add up
to the output the same request gets when it is read once at its end (final_only)."""

from __future__ import annotations

import pytest

from sarathi import SamplingParams
from sarathi.config import EngineConfig
from sarathi.engine.llm_engine import LLMEngine
from sarathi.outputs import CompletionOutput, DeltaAccumulator, RequestOutput
from sarathi.sampling_params import RequestOutputKind

PROMPT = [11, 12, 13, 14, 15, 16, 17]


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return LLMEngine(EngineConfig.from_kwargs(model="demo", max_model_len=256))


def _run(engine: LLMEngine, requests: dict[str, tuple[SamplingParams, dict]]) -> dict:
    """Each request's outputs, in order, the requests running together."""
    for rid, (params, kwargs) in requests.items():
        engine.add_request(PROMPT, params, request_id=rid, **kwargs)
    seen: dict[str, list[RequestOutput]] = {rid: [] for rid in requests}
    while engine.has_unfinished_requests():
        for out in engine.step():
            seen[out.request_id].append(out)
    return seen


def _added_up(outs: list[RequestOutput], index: int) -> dict:
    parts: list[CompletionOutput] = [o.outputs[index] for o in outs]
    assert all(c.text == c.text_delta for c in parts)
    assert all(len(c.token_ids) == c.num_new_tokens for c in parts)
    logprobs = None
    if parts[0].logprobs is not None:
        logprobs = [e for c in parts for e in c.logprobs]
    last = parts[-1]
    return {
        "text": "".join(c.text for c in parts),
        "token_ids": [t for c in parts for t in c.token_ids],
        "logprobs": logprobs,
        "finish_reason": last.finish_reason,
        "stop_reason": last.stop_reason,
        "num_output_tokens": last.num_output_tokens,
    }


def _whole(c: CompletionOutput) -> dict:
    return {
        "text": c.text,
        "token_ids": c.token_ids,
        "logprobs": c.logprobs,
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
        "num_output_tokens": len(c.token_ids),
    }


def _same_logprobs(a: list | None, b: list | None) -> None:
    """Same tokens and ranks; values to the last bits of a different batch row."""
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    assert [{t: v.rank for t, v in e.items()} for e in a] == [
        {t: v.rank for t, v in e.items()} for e in b
    ]
    flat = [v.logprob for e in a for v in e.values()]
    assert flat == pytest.approx([v.logprob for e in b for v in e.values()], abs=1e-4)


def _check(outs: list[RequestOutput], final: RequestOutput, n: int) -> None:
    assert outs[-1].finished and all(not o.finished for o in outs[:-1])
    for j in range(n):
        got, want = _added_up(outs, j), _whole(final.outputs[j])
        _same_logprobs(got.pop("logprobs"), want.pop("logprobs"))
        assert got == want, j
        assert outs[-1].outputs[j].cumulative_logprob == pytest.approx(
            final.outputs[j].cumulative_logprob, abs=1e-3
        )


@pytest.mark.parametrize("kind", ["delta=True", "output_kind"])
def test_added_up_deltas_equal_the_final_only_output(engine, kind) -> None:
    params = SamplingParams(
        n=3, temperature=0.8, seed=7, max_tokens=24, logprobs=3, prompt_logprobs=2
    )
    delta = (
        (params, {"delta": True})
        if kind == "delta=True"
        else (SamplingParams(**{**_fields(params), "output_kind": RequestOutputKind.DELTA}), {})
    )
    seen = _run(engine, {"final": (params, {"final_only": True}), "delta": delta})
    (final,) = seen["final"]
    outs = seen["delta"]
    assert len(outs) > 3
    _check(outs, final, 3)
    # The prompt's logprobs come with the first output only.
    assert outs[0].prompt_logprobs is not None and len(outs[0].prompt_logprobs) == len(PROMPT)
    assert all(o.prompt_logprobs is None for o in outs[1:])
    assert [list(e or {}) for e in outs[0].prompt_logprobs] == [
        list(e or {}) for e in final.prompt_logprobs
    ]
    # The server's adding up gives the same whole output.
    whole = DeltaAccumulator()
    for o in outs:
        whole.add(o)
    added = whole.output()
    assert added.prompt_logprobs is outs[0].prompt_logprobs
    for j in range(3):
        a, b = _whole(added.outputs[j]), _whole(final.outputs[j])
        _same_logprobs(a.pop("logprobs"), b.pop("logprobs"))
        assert a == b


def _fields(params: SamplingParams) -> dict:
    return {
        k: getattr(params, k)
        for k in ("n", "temperature", "seed", "max_tokens", "logprobs", "prompt_logprobs")
    }


@pytest.mark.parametrize("include", [False, True])
def test_a_stop_string_is_held_back_and_cut_in_deltas_as_in_the_final_output(
    engine, include
) -> None:
    greedy = dict(temperature=0.0, max_tokens=40, ignore_eos=True, logprobs=1)
    (plain,) = _run(engine, {"plain": (SamplingParams(**greedy), {"final_only": True})})["plain"]
    text = plain.outputs[0].text
    assert len(text) > 20, text  # the demo model writes a character or more a token
    stop = text[12:16]
    params = SamplingParams(**greedy, stop=[stop], include_stop_str_in_output=include)
    seen = _run(engine, {"final": (params, {"final_only": True}), "delta": (params, {"delta": True})})
    (final,) = seen["final"]
    assert final.outputs[0].finish_reason == "stop" and final.outputs[0].stop_reason == stop
    _check(seen["delta"], final, 1)
    # Text that might begin the stop string was held back: no unfinished output shows it.
    shown = ""
    for o in seen["delta"][:-1]:
        shown += o.outputs[0].text
        assert stop not in shown
