"""Overlapped scheduling (step N+1 launched before step N's tokens are processed) gives
exactly the outputs of the one-step-at-a-time loop: stops found a step late drop their
extra token, length limits are never overshot, penalties fall back to the exact history."""

import pytest

from models import random_prompts
from sarathi import LLM, SamplingParams


@pytest.fixture(scope="module")
def engines(tiny_models):
    # 8 blocks: small enough that these workloads really run out of memory (at 96KiB the
    # only preemptions were of sequences whose last token was in flight, since fixed).
    common = dict(chunk_size=32, max_num_seqs=8, kv_cache_memory="64KiB",
                  expected_request_tokens=64)
    return {overlap: LLM(tiny_models["llama"], overlap_scheduling=overlap, **common)
            for overlap in (True, False)}


def _run(llm, prompts, params):
    outs = llm.generate(prompts, params, use_tqdm=False)
    return [[(c.token_ids, c.text, c.finish_reason, c.stop_reason) for c in o.outputs]
            for o in outs]


def _frequent_token(llm, prompts) -> int:
    """A token the model emits often, to stop on it mid-generation."""
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
                        use_tqdm=False)
    counts: dict[int, int] = {}
    for o in outs:
        for t in o.outputs[0].token_ids[3:]:
            counts[t] = counts.get(t, 0) + 1
    return max(counts, key=counts.get)


def test_overlap_is_used(engines):
    llm = engines[True]
    assert llm.engine._overlap
    engine = llm.engine
    engine.add_request([5, 6, 7], SamplingParams(max_tokens=4, ignore_eos=True))
    engine.step()
    assert engine._inflight is not None  # launched, not yet processed
    while engine.has_unfinished_requests():
        engine.step()
    assert engine._inflight is None


def test_same_outputs_with_stops_lengths_and_preemption(engines):
    prompts = random_prompts(12, 384, seed=21, min_len=5, max_len=70)
    stop_id = _frequent_token(engines[False], prompts)
    text = engines[False].get_tokenizer().decode([stop_id])
    params = []
    for i in range(len(prompts)):
        kind = i % 4
        if kind == 0:
            params.append(SamplingParams(temperature=0, max_tokens=5 + i, ignore_eos=True))
        elif kind == 1:
            params.append(SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[stop_id],
                                         ignore_eos=True))
        elif kind == 2:
            params.append(SamplingParams(temperature=0, max_tokens=40, stop=[text] if
                                         text.strip() else None, ignore_eos=True))
        else:
            params.append(SamplingParams(temperature=0.8, seed=i, max_tokens=30, n=2,
                                         stop_token_ids=[stop_id], ignore_eos=True))
    got = _run(engines[True], prompts, params)
    want = _run(engines[False], prompts, params)
    assert got == want
    assert any(o[0][2] == "stop" for o in want)  # the stops really fired
    assert engines[True].engine.stats.preemptions > 0  # the small cache forced some


def test_penalties_fall_back_to_exact_history(engines):
    prompts = random_prompts(6, 384, seed=22, min_len=5, max_len=40)
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True,
                            repetition_penalty=1.3, frequency_penalty=0.5)
    assert _run(engines[True], prompts, params) == _run(engines[False], prompts, params)


def test_penalties_beside_plain_requests_under_preemption(tiny_models):
    """A request with penalties makes each step collect the one in flight before planning.
    Planning first and collecting after went wrong in a cache this tight: a request preempted
    while its last token was in flight took that token in the collect, so it sampled in the
    plan but not in the engine's accounting, and the tokens after it went to the wrong
    requests."""
    import random

    rng = random.Random(4)
    prompt = [rng.randrange(3, 384) for _ in range(100)]
    plain = SamplingParams(temperature=0, max_tokens=2)
    penalised = SamplingParams(temperature=0, max_tokens=1, repetition_penalty=1.5)
    base = dict(dtype="float32", max_model_len=256, max_num_seqs=2, chunk_size=512)
    roomy = LLM(tiny_models["llama"], **base)
    want = _run(roomy, [prompt, prompt], [plain, penalised])
    cap = roomy.engine.executor.capacity()
    block_bytes = roomy.engine.cache_plan.budget // cap.num_blocks
    blocks = -(-(len(prompt) + 3) // cap.tokens_per_block) + 1  # about one request's room
    for overlap in (False, True):
        tight = LLM(tiny_models["llama"], **base, kv_cache_memory=blocks * block_bytes,
                    expected_request_tokens=16, overlap_scheduling=overlap)
        assert _run(tight, [prompt, prompt], [plain, penalised]) == want, overlap


def test_streamed_outputs_never_show_placeholders(engines):
    engine = engines[True].engine
    engine.add_request([9, 8, 7, 6], SamplingParams(temperature=0, max_tokens=12,
                                                    ignore_eos=True), request_id="stream")
    seen = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            seen.extend(out.outputs[0].token_ids)
            assert all(t >= 0 for t in out.outputs[0].token_ids)
    assert seen


@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])
@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
def test_same_greedy_outputs_across_architectures_and_policies(tiny_models, arch, scheduler):
    prompts = random_prompts(8, 384, seed=23, min_len=5, max_len=90)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    outs = [_run(LLM(tiny_models[arch], scheduler=scheduler, chunk_size=16, max_num_seqs=8,
                     overlap_scheduling=overlap), prompts, params) for overlap in (True, False)]
    assert outs[0] == outs[1]


def test_default_is_off_on_the_cpu(tiny_models):
    # Unset means "where it can gain": a CUDA device. On the CPU it would only delay outputs.
    llm = LLM(tiny_models["llama"], chunk_size=32, max_num_seqs=2, kv_cache_memory="32KiB",
              expected_request_tokens=64)
    assert llm.engine._overlap is False


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
def test_a_last_token_in_flight_is_not_preempted(tiny_models, scheduler):
    """With plenty of memory, a request whose last token is in flight has nothing to
    compute: the step is empty because of that, not memory, and it must finish as it is
    (preempted, it was recomputed for nothing and its generated blocks were not cached)."""
    llm = LLM(tiny_models["llama"], scheduler=scheduler, chunk_size=16, max_num_seqs=4,
              overlap_scheduling=True)
    prompt = list(range(3, 50))
    params = SamplingParams(temperature=0, max_tokens=25, ignore_eos=True)
    out = llm.generate([prompt], params, use_tqdm=False)[0].outputs[0].token_ids
    assert llm.engine.stats.preemptions == 0
    # The next turn resends prompt + output: the generated tokens' full blocks are cached.
    again = llm.generate([prompt + out + [7]], params, use_tqdm=False)[0]
    assert again.num_cached_tokens == (len(prompt) + len(out)) // 16 * 16
