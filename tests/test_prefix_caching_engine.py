"""Prefix caching end to end: outputs with the cache equal outputs without it."""

from __future__ import annotations

import logging
import math

import pytest

from models import random_prompts
from sarathi import LLM, SamplingParams

CACHES = [
    pytest.param({"kv_layout": "per_layer"}, id="per_layer"),
    pytest.param({"kv_layout": "mega"}, id="mega"),
    pytest.param({"attention_backend": "paged"}, id="paged"),
]
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2)


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


def _shared_prompts(count: int, prefix_len: int, seed: int) -> list[list[int]]:
    prefix = random_prompts(1, 384, seed=seed, min_len=prefix_len, max_len=prefix_len + 1)[0]
    tails = random_prompts(count, 384, seed=seed + 1, min_len=3, max_len=40)
    return [prefix + t for t in tails]


def _check_same(want, got) -> None:
    for a, b in zip(want, got, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        for la, lb in zip(a.outputs[0].logprobs, b.outputs[0].logprobs, strict=True):
            for tok, entry in la.items():
                assert math.isclose(entry.logprob, lb[tok].logprob, abs_tol=1e-4)


def _hits(llm: LLM) -> int:
    pc = llm.engine.prefix_cache
    assert pc is not None
    return pc.counters.hits


@pytest.mark.parametrize("cache", CACHES)
def test_greedy_outputs_and_logprobs_equal_those_without_the_cache(llama, cache):
    prompts = _shared_prompts(10, 90, seed=11)
    off = LLM(llama, chunk_size=32, enable_prefix_caching=False, **cache)
    want = off.generate(prompts, GREEDY)
    on = LLM(llama, chunk_size=32, **cache)
    first = on.generate(prompts, GREEDY)  # later requests hit the first ones' blocks
    second = on.generate(prompts, GREEDY)  # every prompt's full blocks are cached now
    _check_same(want, first)
    _check_same(want, second)
    assert _hits(on) > 0
    assert all(o.num_cached_tokens > 0 for o in second)
    stats = on.engine.cache_stats()
    assert stats["slots_used"] == 0


@pytest.mark.parametrize("cache", CACHES)
def test_a_reset_on_an_idle_engine_reaches_the_workers_at_once(llama, cache):
    """An offline caller steps no more once nothing is unfinished: the evicted blocks must
    not wait for a step that may never come."""
    on = LLM(llama, chunk_size=32, **cache)
    on.generate(_shared_prompts(4, 40, seed=12), GREEDY)
    assert on.engine.reset_prefix_cache() > 0
    assert not on.engine.scheduler.has_work()
    assert on.engine.cache_stats().get("blocks_used", 0) == 0


def test_llm_reset_prefix_cache_as_vllms(llama):
    """vLLM's offline LLM.reset_prefix_cache(): it was missing (AttributeError)."""
    on = LLM(llama, chunk_size=32)
    prompts = _shared_prompts(3, 40, seed=21)
    on.generate(prompts, GREEDY)
    assert on.engine.prefix_cache.num_cached > 0
    assert on.reset_prefix_cache() is True
    assert on.engine.prefix_cache.num_cached == 0
    assert all(o.num_cached_tokens == 0 for o in on.generate(prompts[:1], GREEDY))
    assert LLM(llama, enable_prefix_caching=False).reset_prefix_cache() is True


@pytest.mark.parametrize("cache", CACHES)
def test_chunks_that_cross_the_cached_boundary(llama, cache):
    # Chunks of 7 tokens never line up with blocks of 16 or 32.
    prompts = _shared_prompts(6, 70, seed=12)
    want = LLM(llama, chunk_size=7, enable_prefix_caching=False, **cache).generate(prompts, GREEDY)
    on = LLM(llama, chunk_size=7, **cache)
    _check_same(want, on.generate(prompts[:1], GREEDY) + on.generate(prompts[1:], GREEDY))
    assert _hits(on) > 0


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
def test_preemption_and_eviction_under_a_tight_cache(llama, scheduler):
    prompts = _shared_prompts(12, 60, seed=13) + random_prompts(6, 384, seed=14, min_len=40)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    want = LLM(llama, chunk_size=64, scheduler=scheduler, enable_prefix_caching=False).generate(
        prompts, params
    )
    roomy = LLM(llama, chunk_size=64)
    block = roomy.engine.executor.worker.cache.geometry.block_bytes
    tight = LLM(
        llama,
        chunk_size=64,
        scheduler=scheduler,
        kv_cache_memory=14 * block,
        expected_request_tokens=32,
    )
    got = tight.generate(prompts, params) + tight.generate(prompts[::-1], params)
    assert [o.outputs[0].token_ids for o in got] == [
        o.outputs[0].token_ids for o in want + want[::-1]
    ]
    assert tight.engine.stats.preemptions > 0
    assert _hits(tight) > 0
    assert tight.engine.prefix_cache.counters.evictions > 0
    assert tight.engine.cache_stats()["slots_used"] == 0


def _duplicate_prefix_workload(llm: LLM, params: SamplingParams) -> tuple[list, int]:
    """Two requests with one 3-block prefix submitted together (neither is cached yet, so
    both compute it), then the second one's next turn: its prompt, its answer and more.
    Returns the outputs and the tokens of the second one's full blocks."""
    tpb = llm.engine.executor.capacity().tokens_per_block
    prefix = random_prompts(1, 384, seed=31, min_len=3 * tpb, max_len=3 * tpb + 1)[0]
    tails = random_prompts(2, 384, seed=32, min_len=2 * tpb + 3, max_len=2 * tpb + 4)
    prompts = [prefix + t for t in tails]
    first = llm.generate(prompts, params)
    history = prompts[1] + list(first[1].outputs[0].token_ids)
    more = random_prompts(1, 384, seed=33, min_len=5, max_len=6)[0]
    # Its last token is sampled, never computed: its K/V are not in the cache.
    return first + llm.generate([history + more], params), (len(history) - 1) // tpb * tpb


@pytest.mark.parametrize("cache", CACHES)
def test_a_prefix_computed_twice_at_once_still_caches_the_rest(llama, cache):
    """The second of two requests computing one prefix in the same step keeps its copy of
    the prefix private, but its own later blocks join the cache: its next turn hits all of
    them. Registration stopped at the duplicate block, so that turn recomputed everything
    past the shared prefix."""
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=2)
    off = LLM(llama, chunk_size=512, enable_prefix_caching=False, **cache)
    on = LLM(llama, chunk_size=512, **cache)
    want, _ = _duplicate_prefix_workload(off, params)
    got, cached = _duplicate_prefix_workload(on, params)
    _check_same(want, got)
    assert got[2].num_cached_tokens == cached
    seeded = SamplingParams(temperature=1.0, seed=5, max_tokens=40, ignore_eos=True)
    want, _ = _duplicate_prefix_workload(off, seeded)
    got, cached = _duplicate_prefix_workload(on, seeded)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    assert got[2].num_cached_tokens == cached
    # Every block comes back: those of the finished requests, and the cached ones on a reset.
    engine = on.engine
    assert on.reset_prefix_cache() is True
    assert engine.scheduler.free_blocks == engine.scheduler.capacity.num_blocks
    assert engine.prefix_cache.num_cached == 0 and engine.prefix_cache.num_sequences == 0
    assert engine.cache_stats().get("blocks_used", 0) == 0


def test_a_sample_that_recomputes_the_last_prompt_block_caches_its_answer(llama):
    """A prompt of whole blocks: the later samples of an n > 1 request share all but its
    last block and compute that one themselves, beside the first sample's entry. Their
    generated blocks still join the cache, so a chat continuing one sample hits them."""
    on = LLM(llama)
    tpb = on.engine.executor.capacity().tokens_per_block
    prompt = random_prompts(1, 384, seed=34, min_len=4 * tpb, max_len=4 * tpb + 1)[0]
    params = SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=3 * tpb, ignore_eos=True)
    sample = on.generate([prompt], params)[0].outputs[1]
    history = prompt + list(sample.token_ids)
    again = on.generate([history + [5, 6, 7]], SamplingParams(max_tokens=1))[0]
    assert again.num_cached_tokens == (len(history) - 1) // tpb * tpb
    assert on.reset_prefix_cache() is True
    assert on.engine.scheduler.free_blocks == on.engine.scheduler.capacity.num_blocks


def test_penalties_read_the_cached_prompt_tokens_too(llama):
    """Penalties count every earlier token, the cached ones included."""
    prompts = _shared_prompts(6, 80, seed=18)
    params = SamplingParams(
        temperature=0, max_tokens=16, ignore_eos=True, repetition_penalty=1.5,
        presence_penalty=0.8, frequency_penalty=0.4,
    )  # fmt: skip
    want = LLM(llama, enable_prefix_caching=False).generate(prompts, params)
    on = LLM(llama)
    got = on.generate(prompts[:1], params) + on.generate(prompts[1:], params)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    assert _hits(on) > 0


def test_samples_of_one_request_share_its_prompt(llama):
    prompt = random_prompts(1, 384, seed=15, min_len=100, max_len=101)[0]
    params = SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=10, ignore_eos=True)
    want = LLM(llama, enable_prefix_caching=False).generate([prompt], params)[0]
    on = LLM(llama)
    got = on.generate([prompt], params)[0]
    assert [c.token_ids for c in got.outputs] == [c.token_ids for c in want.outputs]
    tpb = on.engine.executor.capacity().tokens_per_block
    assert _hits(on) == 3 * (99 // tpb) * tpb  # the three later samples share every full block


def test_cached_blocks_are_shared_in_memory(llama):
    on = LLM(llama, kv_layout="mega")
    engine = on.engine
    prompts = _shared_prompts(6, 96, seed=16)
    on.generate(prompts[:1], SamplingParams(max_tokens=1))
    for i, p in enumerate(prompts):
        engine.add_request(p, SamplingParams(max_tokens=30, ignore_eos=True), request_id=str(i))
    for _ in range(3):
        engine.step()
    stats = engine.cache_stats()
    assert stats["frames_shared"] > 0
    assert stats["mapped_bytes"] < stats["virtual_mapped_bytes"]
    while engine.has_unfinished_requests():
        engine.step()


def test_switch_off_and_dense_backend(llama, caplog):
    assert LLM(llama, enable_prefix_caching=False).engine.prefix_cache is None
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        assert LLM(llama, kv_cache_backend="dense").engine.prefix_cache is None
    assert "prefix caching is off" not in caplog.text  # the default: said at info level
    # Asked for and not done: said as a warning (it was logged at info level only).
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(llama, kv_cache_backend="dense", enable_prefix_caching=True)
    assert llm.engine.prefix_cache is None and "prefix caching is off" in caplog.text
    assert LLM(llama).engine.prefix_cache is not None


@pytest.mark.gpu
@pytest.mark.parametrize("cache", CACHES)
def test_on_the_gpu_with_graphs_outputs_equal_those_without_the_cache(tmp_path, cache):
    # 2 MiB pages need wide KV rows for blocks a test can fill: 8 KV heads of 128 dims in
    # fp32 and 16 layers give 512-token blocks per layer and 32-token blocks in mega.
    from models import save_tiny_model

    path = save_tiny_model(
        "llama", str(tmp_path / "wide"), hidden_size=1024, num_attention_heads=8,
        num_key_value_heads=8, head_dim=128, num_hidden_layers=16, intermediate_size=256,
        max_position_embeddings=2048, weight_std=1 / 32,
    )  # fmt: skip
    prompts = _shared_prompts(8, 1100, seed=17)
    kw = {"dtype": "float32", "max_model_len": 1400, **cache}
    # Triton's fp32 dot products round through TF32, so computing a prompt in other chunks
    # moves logprobs a little. The yardstick is that noise: the cache may move them no more
    # than a different chunk size does (greedy tokens must hold exactly).
    def run(caching: bool, chunk: int) -> list:
        llm = LLM(path, enable_prefix_caching=caching, chunk_size=chunk, **kw)
        outs = llm.generate(prompts[:1], GREEDY) + llm.generate(prompts[1:], GREEDY)
        outs += llm.generate(prompts, GREEDY)
        if caching:
            assert _hits(llm) > 0
        llm.engine.shutdown()
        return outs

    base = run(False, 256)
    noise = _largest_gap(base, run(False, 96))
    cached = run(True, 256)
    assert [o.outputs[0].token_ids for o in cached] == [o.outputs[0].token_ids for o in base]
    assert _largest_gap(base, cached) <= 2 * noise + 1e-2


def _largest_gap(want, got) -> float:
    gap = 0.0
    for a, b in zip(want, got, strict=True):
        for la, lb in zip(a.outputs[0].logprobs, b.outputs[0].logprobs, strict=True):
            for tok, entry in la.items():
                if tok in lb:
                    gap = max(gap, abs(entry.logprob - lb[tok].logprob))
    return gap


def test_a_cache_salt_keeps_requests_apart(llama):
    """vLLM's cache_salt: only requests with the same salt share cached blocks."""
    llm = LLM(llama)
    engine = llm.engine
    prompt = _shared_prompts(1, 90, seed=19)[0]
    params = SamplingParams(temperature=0, max_tokens=2)

    def cached(salt: str | None) -> int:
        engine.add_request(prompt, params, request_id=f"r{engine.prefix_cache.counters.queries}",
                           cache_salt=salt)  # fmt: skip
        outs = []
        while engine.has_unfinished_requests():
            outs += [o for o in engine.step() if o.finished]
        return outs[0].num_cached_tokens

    assert cached("tenant-a") == 0
    assert cached("tenant-b") == 0  # the same prompt, another salt: no hit
    assert cached(None) == 0
    assert cached("tenant-a") > 0
    assert cached(None) > 0


def test_generate_takes_vllms_cache_salt_in_a_prompt_dict(llama):
    """LLM.generate({"prompt_token_ids": ..., "cache_salt": ...}), as vLLM's prompt dicts
    carry it: the key was refused as not supported."""
    llm = LLM(llama)
    prompt = _shared_prompts(1, 90, seed=23)[0]
    params = SamplingParams(temperature=0, max_tokens=2)

    def cached(salt: str | None) -> int:
        p: dict = {"prompt_token_ids": prompt}
        if salt is not None:
            p["cache_salt"] = salt
        return llm.generate(p, params)[0].num_cached_tokens

    assert cached("tenant-a") == 0
    assert cached("tenant-b") == 0
    assert cached(None) == 0
    assert cached("tenant-a") > 0
    with pytest.raises(ValueError, match="prompt 0: cache_salt must be a non-empty string"):
        llm.generate({"prompt": "hi", "cache_salt": 3}, params)
