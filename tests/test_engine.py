"""Engine behaviour: batching invariance, seeds, preemption, stops, n, logprobs, errors."""

import json
import shutil

import pytest
import torch

from models import random_prompts
from sarathi import LLM, SamplingParams


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


@pytest.fixture(scope="module")
def llm(llama):
    return LLM(llama, chunk_size=32, max_num_seqs=32)


def _ids(outs):
    return [o.outputs[0].token_ids for o in outs]


def _outputs_by_request(engine) -> dict[str, list]:
    """Step the engine until it is done: every output it returned, by request."""
    outs: dict[str, list] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            outs.setdefault(out.request_id, []).append(out)
    return outs


def test_greedy_output_is_the_same_alone_and_in_a_batch(llm):
    prompts = random_prompts(16, 384, seed=3, max_len=60)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    batch = _ids(llm.generate(prompts, params))
    for i in (0, 7, 15):
        assert _ids(llm.generate([prompts[i]], params))[0] == batch[i]


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(llm):
    prompts = random_prompts(12, 384, seed=4, max_len=50)
    seeded = SamplingParams(
        temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=20, ignore_eos=True
    )
    other = SamplingParams(temperature=1.0, max_tokens=20, ignore_eos=True)
    alone = _ids(llm.generate([prompts[0]], seeded))[0]
    mixed = _ids(llm.generate(prompts, [seeded] + [other] * (len(prompts) - 1)))[0]
    again = _ids(llm.generate([prompts[0]], seeded))[0]
    assert alone == mixed == again
    different = _ids(
        llm.generate(
            [prompts[0]], SamplingParams(temperature=1.0, seed=99, max_tokens=20, ignore_eos=True)
        )
    )
    assert different[0] != alone


def test_the_n_sequences_of_a_seeded_request_take_seed_plus_their_index(llm):
    """As vLLM v1 seeds a request's n children (ParentRequest: seed + index): choice i of
    seed s is what seed s + i gives alone (it was a hash of (seed, index))."""
    prompt = random_prompts(1, 384, seed=6, max_len=30)[0]

    def sampled(seed: int, n: int) -> list[list[int]]:
        params = SamplingParams(temperature=1.0, seed=seed, n=n, max_tokens=12, ignore_eos=True)
        return [list(c.token_ids) for c in llm.generate([prompt], params)[0].outputs]

    together = sampled(1234, 3)
    assert together == [sampled(1234 + i, 1)[0] for i in range(3)]
    assert len({tuple(t) for t in together}) == 3


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
def test_preemption_by_recompute_gives_the_same_greedy_outputs(llama, scheduler):
    prompts = random_prompts(16, 384, seed=5, min_len=20, max_len=70)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    roomy = LLM(llama, chunk_size=64, max_num_seqs=16, scheduler=scheduler)
    expected = _ids(roomy.generate(prompts, params))
    # 12 blocks of 32 tokens: far less than 16 requests of ~100 tokens need.
    block = roomy.engine.executor.worker.cache.geometry.block_bytes
    tight = LLM(
        llama,
        chunk_size=64,
        max_num_seqs=16,
        scheduler=scheduler,
        kv_cache_memory=12 * block,
        expected_request_tokens=32,
    )
    got = _ids(tight.generate(prompts, params))
    assert tight.engine.stats.preemptions > 0
    assert got == expected
    assert tight.engine.cache_stats()["slots_used"] == 0


def test_a_chunk_size_the_vllm_scheduler_raises_is_named(llama, caplog):
    """The vllm policy prefills whole prompts, so its step budget is at least max_model_len:
    a smaller chunk_size was taken and not kept, without a word."""
    import logging

    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(llama, scheduler="vllm", chunk_size=64, max_model_len=256)
    assert "chunk_size 64 is below max_model_len 256" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(llama, scheduler="vllm", chunk_size=256, max_model_len=256)
        LLM(llama, scheduler="vllm", max_model_len=256)
        LLM(llama, chunk_size=64, max_model_len=256)
    assert "chunk_size" not in caplog.text


def test_worker_timeouts_with_the_in_process_executor_are_named_as_ignored(llama, caplog):
    """Only the mp and ray executors watch their workers: with the in-process one (the
    default for one rank) the timeouts were taken and did nothing, without a word."""
    import logging

    from sarathi.config import EngineConfig

    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(llama, step_timeout=5, worker_start_timeout=60)
    assert "step_timeout and worker_start_timeout are ignored by the in-process" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(llama)  # the defaults: nothing to say
    assert "timeout" not in caplog.text
    # The executors that read them get the defaults where none is given.
    parallel = EngineConfig.from_kwargs(executor="mp", step_timeout=5).parallel
    assert (parallel.resolved_step_timeout, parallel.resolved_worker_start_timeout) == (5, 900)
    with pytest.raises(ValueError, match="worker_start_timeout must be positive, got 0"):
        EngineConfig.from_kwargs(worker_start_timeout=0)


def test_prompt_longer_than_context_fails_alone(llama):
    llm = LLM(llama, max_model_len=64)
    outs = llm.generate(
        [[5] * 10, [5] * 100, [6] * 12],
        SamplingParams(temperature=0, max_tokens=4, ignore_eos=True),
    )
    assert outs[1].error and "context" in outs[1].error
    assert outs[1].outputs[0].finish_reason == "error"
    assert len(outs[0].outputs[0].token_ids) == 4 and len(outs[2].outputs[0].token_ids) == 4


def test_a_prompt_the_whole_kv_cache_cannot_hold_is_refused_naming_the_cache(llama, caplog):
    """max_model_len is 512, but two blocks of 16 tokens are all the cache has: the error
    must send the user to --kv-cache-memory, not to the model's context."""
    import logging

    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(llama, kv_cache_memory=2 * 8192)
    assert llm.engine.max_seq_len == 32 and "raise --kv-cache-memory" in caplog.text
    outs = llm.generate([[5] * 40, [6] * 8], SamplingParams(temperature=0, max_tokens=4))
    assert "KV cache holds 32 tokens" in outs[0].error and "--kv-cache-memory" in outs[0].error
    assert outs[1].error is None and len(outs[1].outputs[0].token_ids) == 4


def test_output_stops_at_the_context_limit(llama):
    llm = LLM(llama, max_model_len=40)
    out = llm.generate([[5] * 30], SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))[
        0
    ].outputs[0]
    assert len(out.token_ids) == 10 and out.finish_reason == "length"


def test_extra_eos_ids_report_themselves_as_the_stop_reason(llama, tmp_path):
    """vLLM's rule: the EOS ids generation_config.json adds to the tokenizer's end a
    sequence as stop token ids do, reporting the id; the tokenizer's EOS reports none, and
    ignore_eos ignores both."""
    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    ignore = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    llm = LLM(str(folder), chunk_size=32, max_num_seqs=16)
    eos = llm.get_tokenizer().eos_token_id
    prompts = random_prompts(16, 384, seed=6)
    # A prompt whose greedy output reaches a few tokens before the tokenizer's EOS.
    prompt, base = next(
        (p, ids) for p, ids in zip(prompts, _ids(llm.generate(prompts, ignore))) if eos not in ids[:4]
    )
    extra = base[3]
    del llm
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, extra]}))
    llm = LLM(str(folder), chunk_size=32, max_num_seqs=4)
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=20))[0].outputs[0]
    assert out.token_ids == base[: base.index(extra) + 1]
    assert out.finish_reason == "stop" and out.stop_reason == extra
    assert _ids(llm.generate([prompt], ignore))[0] == base


def test_stop_token_ids_and_min_tokens(llm):
    prompt = random_prompts(1, 384, seed=6)[0]
    base = _ids(
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    )[0]
    stop_tok = base[5]
    first = base.index(stop_tok)
    out = llm.generate(
        [prompt],
        SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop_token_ids=[stop_tok]),
    )[0].outputs[0]
    assert out.token_ids == base[: first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_tok
    # The stop token's text is left out unless include_stop_str_in_output (vLLM's rule),
    # offline and streamed alike.
    tok = llm.get_tokenizer()
    engine = llm.engine
    for include in (False, True):
        params = SamplingParams(
            temperature=0, max_tokens=20, ignore_eos=True, stop_token_ids=[stop_tok],
            include_stop_str_in_output=include,
        )  # fmt: skip
        want = tok.decode(base[: first + include], skip_special_tokens=True)
        assert llm.generate([prompt], params)[0].outputs[0].text == want
        engine.add_request(prompt, params, request_id=f"streamed-{include}")
        streamed = _outputs_by_request(engine)[f"streamed-{include}"]
        assert streamed[-1].outputs[0].text == want
        assert "".join(o.outputs[0].text_delta for o in streamed) == want
    # min_tokens bans the stop token until enough tokens exist
    out = (
        llm.generate(
            [prompt],
            SamplingParams(
                temperature=0,
                max_tokens=20,
                ignore_eos=True,
                stop_token_ids=[stop_tok],
                min_tokens=first + 3,
            ),
        )
        .pop()
        .outputs[0]
    )
    assert len(out.token_ids) >= first + 3
    assert stop_tok not in out.token_ids[: first + 2]


def test_stop_strings_cross_token_boundaries_and_are_excluded(llm):
    tok = llm.get_tokenizer()
    prompt = random_prompts(1, 384, seed=7)[0]
    full = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[
        0
    ].outputs[0]
    text = full.text
    assert len(text) > 12
    # a stop string made of the end of one token and the start of the next
    pieces = [tok.decode([t]) for t in full.token_ids]
    k = next(i for i in range(3, len(pieces) - 1) if pieces[i] and pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][:1]
    cut = text.find(stop)
    out = llm.generate(
        [prompt], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop=[stop])
    )[0].outputs[0]
    assert out.text == text[:cut] and out.finish_reason == "stop" and out.stop_reason == stop
    keep = llm.generate(
        [prompt],
        SamplingParams(
            temperature=0,
            max_tokens=30,
            ignore_eos=True,
            stop=stop,
            include_stop_str_in_output=True,
        ),
    )
    assert keep[0].outputs[0].text == text[: cut + len(stop)]


def test_n_completions(llm):
    prompt = random_prompts(1, 384, seed=8)[0]
    out = llm.generate(
        [prompt], SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=12, ignore_eos=True)
    )[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 12 for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    greedy = llm.generate(
        [prompt], SamplingParams(n=2, temperature=0, max_tokens=8, ignore_eos=True)
    )[0]
    assert greedy.outputs[0].token_ids == greedy.outputs[1].token_ids


def test_logprobs_match_a_log_softmax_reference(llm):
    prompt = random_prompts(1, 384, seed=9)[0]
    out = llm.generate(
        [prompt], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=5)
    )[0].outputs[0]
    runner = llm.engine.executor.worker.runner
    ref = torch.log_softmax(runner.forward_logits(prompt + out.token_ids), dim=-1)
    total = 0.0
    for i, (tok, entry) in enumerate(zip(out.token_ids, out.logprobs)):
        row = ref[len(prompt) - 1 + i]
        top = row.topk(5)
        assert set(top.indices.tolist()) <= set(entry)
        for tid, lp in entry.items():
            assert abs(lp.logprob - row[tid].item()) < 1e-4
        assert entry[tok].rank == 1  # greedy picks the most likely token
        total += row[tok].item()
    assert abs(out.cumulative_logprob - total) < 1e-3


def test_penalties_change_repetition(llm):
    prompt = [7] * 8
    plain = (
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0]
        .outputs[0]
        .token_ids
    )
    penal = (
        llm.generate(
            [prompt],
            SamplingParams(
                temperature=0,
                max_tokens=30,
                ignore_eos=True,
                frequency_penalty=2.0,
                presence_penalty=2.0,
                repetition_penalty=2.0,
            ),
        )[0]
        .outputs[0]
        .token_ids
    )
    assert len(set(penal)) >= len(set(plain))
    assert 7 not in penal[:3] or 7 not in plain[:3]


def test_generate_accepts_strings_and_keeps_input_order(llm):
    outs = llm.generate(
        ["the scheduler", "a cache", "memory"],
        SamplingParams(temperature=0, max_tokens=3, ignore_eos=True),
    )
    assert [o.prompt for o in outs] == ["the scheduler", "a cache", "memory"]
    tok = llm.get_tokenizer()
    assert outs[1].prompt_token_ids == tok.encode("a cache")


def test_final_only_requests_give_one_output_equal_to_the_streamed_result(llm):
    """Offline generation asks for final outputs only: one per request, when it finishes,
    with the same tokens and text as the last snapshot of a streamed request."""
    engine = llm.engine
    prompts = random_prompts(3, 100, seed=11)
    params = SamplingParams(temperature=0, max_tokens=9, stop=["zz"], ignore_eos=True)
    for i, p in enumerate(prompts):
        engine.add_request(p, params, request_id=f"final-{i}", final_only=True)
        engine.add_request(p, params, request_id=f"stream-{i}")
    outs = _outputs_by_request(engine)
    for i in range(3):
        final, stream = outs[f"final-{i}"], outs[f"stream-{i}"]
        assert len(final) == 1 and final[0].finished
        assert len(stream) > 1 and stream[-1].finished
        a, b = final[0].outputs[0], stream[-1].outputs[0]
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        assert a.text == "".join(o.outputs[0].text_delta for o in stream)


def test_delta_outputs_carry_what_each_step_added_the_last_too(llm):
    """A stream's snapshots (``delta``): each, the finished one too, holds only the new
    text, token ids and logprobs, which add up to a whole-snapshot stream's finished output
    (logprob values may differ in the last bits: the two sit in different rows)."""
    engine = llm.engine
    prompts = random_prompts(3, 100, seed=12)
    params = SamplingParams(temperature=0, max_tokens=11, logprobs=2, ignore_eos=True, n=2)
    for i, p in enumerate(prompts):
        engine.add_request(p, params, request_id=f"delta-{i}", delta=True)
        engine.add_request(p, params, request_id=f"whole-{i}")
    outs = _outputs_by_request(engine)
    for i in range(3):
        delta, whole = outs[f"delta-{i}"], outs[f"whole-{i}"]
        assert delta[-1].finished and whole[-1].finished and len(delta) > 2
        for j in range(params.n):
            # A choice that finished first reappears, with nothing added, in later outputs.
            parts, want = [o.outputs[j] for o in delta], whole[-1].outputs[j]
            assert all(len(c.token_ids) == c.num_new_tokens for c in parts)
            assert all(c.text == c.text_delta for c in parts)
            assert [t for c in parts for t in c.token_ids] == want.token_ids
            assert "".join(c.text for c in parts) == want.text
            assert len(parts[-1].token_ids) < len(want.token_ids)
            assert parts[-1].num_output_tokens == len(want.token_ids)
            lps = [lp for c in parts for lp in c.logprobs]
            assert len(lps) == len(want.logprobs) == len(want.token_ids)
            assert parts[-1].cumulative_logprob == pytest.approx(want.cumulative_logprob)


def test_logit_bias_and_allowed_token_ids(llm):
    prompt = random_prompts(1, 384, seed=9)[0]
    for temperature in (0.0, 1.0):
        base = dict(temperature=temperature, seed=3, max_tokens=8, ignore_eos=True)
        forced = llm.generate([prompt], SamplingParams(logit_bias={42: 100}, **base))
        assert set(forced[0].outputs[0].token_ids) == {42}
        allowed = llm.generate([prompt], SamplingParams(allowed_token_ids=[7, 9], **base))
        assert set(allowed[0].outputs[0].token_ids) <= {7, 9}
        free = _ids(llm.generate([prompt], SamplingParams(**base)))[0]
        banned = llm.generate([prompt], SamplingParams(logit_bias={t: -100 for t in free}, **base))
        assert not set(banned[0].outputs[0].token_ids) & set(free)
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias={5: 101})


class _CountedIds(list):
    """A list that counts how often it is walked."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


def test_allowed_token_ids_are_read_once_per_request_not_per_step(llm):
    """A list of a million allowed ids (the server takes 2**20) was walked in Python for every
    row at every step, holding the engine thread for seconds per step and stalling every
    other request; it is read when the request starts, however many tokens it generates."""
    prompt = random_prompts(1, 384, seed=9)[0]
    walks = []
    for max_tokens in (2, 24):
        ids = _CountedIds([7, 9, 7])
        _CountedIds.walks = 0
        base = dict(temperature=1.0, seed=3, max_tokens=max_tokens, ignore_eos=True, n=3)
        outs = llm.generate([prompt], SamplingParams(allowed_token_ids=ids, **base))
        assert all(set(c.token_ids) <= {7, 9} for c in outs[0].outputs)
        assert all(len(c.token_ids) == max_tokens for c in outs[0].outputs)
        walks.append(_CountedIds.walks)
    assert walks[0] == walks[1], walks  # not a walk per step (nor per sequence and step)


def test_token_ids_outside_the_vocabulary_fail_their_request_alone(llm):
    prompts = random_prompts(3, 384, seed=9)
    base = dict(temperature=0, max_tokens=4, ignore_eos=True)
    for name, value in (("logit_bias", {10**7: 1.0}), ("allowed_token_ids", [7, 10**7])):
        bad = SamplingParams(**{name: value}, **base)
        outs = llm.generate(prompts, [SamplingParams(**base), bad, SamplingParams(**base)])
        assert outs[1].error and name in outs[1].error
        assert [len(o.outputs[0].token_ids) for o in (outs[0], outs[2])] == [4, 4]


def test_a_temperature_below_greedy_below_is_greedy(llm):
    """A tiny temperature would overflow logits / t to inf; vLLM treats it as greedy."""
    prompt = random_prompts(1, 384, seed=10)[0]
    base = dict(max_tokens=8, ignore_eos=True)
    greedy = _ids(llm.generate([prompt], SamplingParams(temperature=0, **base)))
    for t in (1e-40, 1e-6):
        assert _ids(llm.generate([prompt], SamplingParams(temperature=t, **base))) == greedy


def test_each_prefill_chunk_hints_the_next_for_mapping_ahead(llama, monkeypatch):
    """A chunk's ensure() finds the blocks of the chunk after it already asked for: the
    background thread maps them while the step runs, off the next step's critical path."""
    llm = LLM(llama, chunk_size=32, max_num_seqs=4)
    runner = llm.engine.executor.worker.runner
    hints: list[tuple[int, int]] = []
    ensures: list[tuple[int, int]] = []
    real_hint, real_ensure = runner.cache.reserve_ahead, runner.cache.ensure

    def hint(slot: int, tokens: int) -> None:
        hints.append((slot, tokens))
        real_hint(slot, tokens)

    def ensure(slot: int, tokens: int) -> None:
        ensures.append((slot, tokens))
        real_ensure(slot, tokens)

    monkeypatch.setattr(runner.cache, "reserve_ahead", hint)
    monkeypatch.setattr(runner.cache, "ensure", ensure)
    prompt = [10 + i % 90 for i in range(200)]
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    slot = hints[0][0]
    ensured = sorted(t for s, t in ensures if s == slot)
    hinted = sorted(t for s, t in hints if s == slot)
    # Every chunk after the first was hinted before it was ensured, up to the prompt's end.
    assert ensured[0] == 32 and max(hinted) >= 200
    for tokens in ensured[1:]:
        if tokens <= 200:
            assert any(h >= tokens for h in hinted), (tokens, hinted)


@pytest.mark.parametrize("kwargs,name", [
    ({"chunk_size": "256"}, "chunk_size"), ({"max_num_seqs": 4.5}, "max_num_seqs"),
    ({"enable_prefix_caching": "no"}, "enable_prefix_caching"), ({"seed": "1"}, "seed"),
])
def test_engine_options_of_the_wrong_type_name_the_option(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LLM(**kwargs)


def test_max_model_len_past_the_models_context_needs_the_override(llama, monkeypatch):
    with pytest.raises(ValueError, match="SARATHI_ALLOW_LONG_MAX_MODEL_LEN"):
        LLM(llama, max_model_len=100_000)
    monkeypatch.setenv("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", "1")
    assert LLM(llama, max_model_len=4096).engine.max_seq_len == 4096


@pytest.mark.parametrize("caching", [False, True])
def test_aborting_the_last_request_frees_its_slot_at_once(llama, caching):
    """A caller's loop ends once no request is unfinished: nothing may stay held for a step
    that never comes."""
    engine = LLM(llama, chunk_size=16, enable_prefix_caching=caching).engine
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    engine.add_request(list(range(3, 60)), params, request_id="a")
    engine.step()
    engine.step()
    engine.abort_request("a")
    assert not engine.has_unfinished_requests()
    assert engine.cache_stats()["slots_used"] == 0
    assert not engine.scheduler.has_work()


def test_top_k_keeps_every_logit_tied_with_the_kth_whatever_the_batch():
    """Tied logits at the top-k cut (frequent with bf16 logits) all stay, as vLLM's threshold
    keeps them: the cut does not pick among equals, whatever rows the step samples."""
    from sarathi.model_executor.layers.sampler import _top_k_top_p

    row = torch.full((4096,), -5.0)
    row[[7, 900, 1500, 3000]] = 2.0  # four tokens tie for places 2-5
    row[42] = 3.0
    for rows in (1, 3, 64):
        logits = row.repeat(rows, 1)
        kept = _top_k_top_p(logits, torch.full((rows,), 3.0), torch.ones(rows))
        for r in range(rows):
            assert (kept[r] > -torch.inf).nonzero().flatten().tolist() == [7, 42, 900, 1500, 3000]
    # A k beyond the vocabulary keeps it all.
    wide = _top_k_top_p(row.unsqueeze(0), torch.tensor([10_000.0]), torch.ones(1))
    assert torch.equal(wide, row.unsqueeze(0))
