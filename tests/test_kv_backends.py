"""Engine outputs are the same whatever memory holds the KV cache."""

import pytest

from models import random_prompts
from sarathi import LLM, SamplingParams


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_cpu_backend_is_token_identical_to_dense(tiny_models, layout):
    prompts = random_prompts(12, 384, seed=12, min_len=10, max_len=80)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    outs = {}
    for backend in ("dense", "cpu"):
        llm = LLM(tiny_models["qwen3"], kv_cache_backend=backend, kv_layout=layout,
                  chunk_size=32, max_num_seqs=8, kv_cache_memory="1MiB",
                  expected_request_tokens=64)
        outs[backend] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        assert llm.engine.cache_stats()["backend"] == backend
    assert outs["cpu"] == outs["dense"]


@pytest.mark.parametrize("block_size", [1, 16])
def test_paged_cache_is_token_identical_to_vattention(tiny_models, block_size):
    """The paged baseline (block tables; preemption forced by a small pool) gives the same
    greedy tokens as the vattention cache."""
    prompts = random_prompts(12, 384, seed=13, min_len=10, max_len=80)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    outs = {}
    for backend in ("torch", "paged"):
        llm = LLM(tiny_models["llama"], attention_backend=backend, block_tokens=block_size,
                  chunk_size=32, max_num_seqs=8, kv_cache_memory="96KiB",
                  expected_request_tokens=64)
        outs[backend] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        stats = llm.engine.cache_stats()
        if backend == "paged":
            assert stats["backend"] == "paged" and stats["tokens_per_block"] == block_size
            # Every block went back but those the prefix cache keeps (evictable).
            assert stats["blocks_used"] == llm.engine.prefix_cache.num_evictable
            assert llm.engine.stats.preemptions > 0
    assert outs["paged"] == outs["torch"]
