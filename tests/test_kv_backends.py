"""Engine outputs are the same whatever memory holds the KV cache."""

import logging

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


@pytest.mark.parametrize("backend", ["cpu", "paged"])
def test_cache_stats_count_slots_and_blocks_as_capacity_does(tiny_models, backend):
    """The graphs' pad slot (held from start-up on a GPU) is the engine's: the usage the
    statistics report (what /metrics' gauges read) leaves it out, as the scheduler's
    capacity does. CUDA graphs are simulated here by the pad slot alone."""
    kwargs = {"attention_backend": "paged"} if backend == "paged" else {"kv_cache_backend": "cpu"}
    llm = LLM(tiny_models["llama"], max_num_seqs=4, **kwargs)
    worker = llm.engine.executor.worker
    pad = worker.cache.alloc_slot()  # what step_graphs takes before capturing
    worker.cache.ensure(pad, 1)
    worker.cache.commit()
    worker.runner.graphs = object()  # replays graphs, as far as the worker can tell
    cap, stats = worker.capacity(), worker.cache_stats()
    assert (stats["slots_used"], stats["blocks_used"]) == (0, 0)
    assert (stats["max_slots"], stats["blocks_total"]) == (cap.max_slots, cap.num_blocks)


@pytest.mark.parametrize("option", [{"kv_layout": "per_layer"}, {"page_bytes": "8KiB"},
                                    {"kv_cache_backend": "cpu"}])
def test_vattention_options_with_the_paged_cache_are_refused(option):
    """The paged backend builds its own block-table cache: vAttention's options were taken
    and dropped without a word."""
    with pytest.raises(ValueError, match=f"{next(iter(option))} configures vAttention's KV"):
        LLM(attention_backend="paged", **option)


def test_block_tokens_with_a_vattention_cache_is_named_as_ignored(tiny_models, caplog):
    """block_tokens (vLLM's --block-size) sizes only the paged cache's blocks; a vAttention
    cache's are pages. vLLM command lines keep running, with a warning saying so."""
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(tiny_models["llama"], block_size=32, kv_cache_memory="1MiB")
    assert "block_tokens (vLLM's --block-size) 32 is ignored" in caplog.text
    assert llm.engine.cache_stats()["tokens_per_block"] != 32
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(tiny_models["llama"], attention_backend="paged", block_size=32,
                  kv_cache_memory="1MiB")
    assert "is ignored" not in caplog.text
    assert llm.engine.cache_stats()["tokens_per_block"] == 32
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(tiny_models["llama"], kv_cache_memory="1MiB")  # the default: nothing to say
    assert "block_tokens" not in caplog.text


def test_the_dense_cache_allocates_no_more_than_its_budget(tiny_models):
    """The dense backend allocates every slot's whole extent up front: its slots were sized
    by the typical request, as the mapped backends', so it allocated up to max_len /
    expected_request_tokens times its budget (on a GPU whose cuda backend fell back to dense,
    an out-of-memory at start-up)."""
    budget = 1024**2
    llm = LLM(tiny_models["qwen3"], kv_cache_backend="dense", kv_cache_memory=budget,
              max_num_seqs=8, expected_request_tokens=64, max_model_len=512)
    cache = llm.engine.executor.worker.cache
    allocated = cache.max_slots * cache.blocks_per_slot * cache.geometry.block_bytes
    assert 1 <= cache.max_slots and allocated <= budget
    out = llm.generate([[5] * 20], SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.outputs[0].token_ids) == 4
    with pytest.raises(ValueError, match="the dense KV cache allocates a slot's 512 tokens"):
        LLM(tiny_models["qwen3"], kv_cache_backend="dense", kv_cache_memory="64KiB",
            max_model_len=512)


def test_gpu_memory_utilization_on_the_cpu_is_named_as_ignored(tiny_models, caplog):
    """Only a GPU's worker reads the fraction: on the CPU it was taken and dropped without a
    word (the host's cache takes --kv-cache-memory, 4 GiB by default)."""
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(tiny_models["llama"], gpu_memory_utilization=0.5, kv_cache_memory="1MiB")
    assert "gpu_memory_utilization 0.5 is ignored on cpu" in caplog.text
    # The demo's cache reports 2 GiB under the 4 GiB default: the message says why.
    assert "or less where --max-num-seqs requests of --max-model-len tokens" in caplog.text
    assert llm.engine.cache_plan.budget <= 1024**2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(tiny_models["llama"], kv_cache_memory="1MiB")  # the default: nothing to say
    assert "gpu_memory_utilization" not in caplog.text


@pytest.mark.parametrize("cache", [{"attention_backend": "paged"}, {"kv_cache_backend": "dense"}])
def test_expected_request_tokens_with_a_cache_that_does_not_read_it_is_named(
    tiny_models, cache, caplog
):
    """expected_request_tokens sizes the slots of the mapped vAttention caches only: the paged
    cache has max_num_seqs slots and the dense one as many as its budget holds at max_len
    each, so it was taken and dropped without a word. Comparisons pass it to every cache,
    so it runs, with a warning."""
    kw = dict(kv_cache_memory="1MiB", max_num_seqs=4, max_model_len=128, **cache)
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(tiny_models["llama"], expected_request_tokens=16, **kw)
    assert "expected_request_tokens 16 is ignored" in caplog.text
    slots = llm.engine.cache_stats()["max_slots"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(tiny_models["llama"], **kw)  # the default: nothing to say
    assert "expected_request_tokens" not in caplog.text
    assert llm.engine.cache_stats()["max_slots"] == slots
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(tiny_models["llama"], expected_request_tokens=16, kv_cache_backend="cpu",
            kv_cache_memory="1MiB")  # read there: nothing to say
    assert "expected_request_tokens" not in caplog.text


def test_gpu_budget_errors_name_the_flag_that_set_the_budget(tiny_models):
    """On a GPU the budget is what --gpu-memory-utilization leaves unless --kv-cache-memory
    sets it. With --kv-cache-memory the worker still computed the fraction's room and, where
    it was none, told the user to raise --gpu-memory-utilization, a flag that does not size
    that cache; and a --kv-cache-memory the GPU did not have failed later, in the driver.
    The GPU's numbers are made up here (the worker passes torch.cuda.mem_get_info's)."""
    import torch

    from sarathi.config import CacheConfig
    from sarathi.model_executor.model_shape import load_model_shape
    from sarathi.worker.cache_engine import gpu_kv_room, plan_cache, unread_fraction

    gib = 1024**3
    free_now, total, step = 10 * gib, 80 * gib, gib  # 70 GiB used by weights and others
    assert gpu_kv_room(CacheConfig(), free_now, total, step) == int(0.9 * total) - 70 * gib - step
    with pytest.raises(ValueError, match="raise --gpu-memory-utilization, set --kv-cache-memory"):
        gpu_kv_room(CacheConfig(gpu_memory_utilization=0.5), free_now, total, step)
    # --kv-cache-memory sizes the cache: the fraction is not read, what is free is the room.
    given = CacheConfig(kv_cache_memory=4 * gib, gpu_memory_utilization=0.5)
    assert gpu_kv_room(given, free_now, total, step) == free_now - step
    assert "with --kv-cache-memory" in unread_fraction(given, torch.device("cuda", 0))
    assert unread_fraction(CacheConfig(gpu_memory_utilization=0.5), torch.device("cuda", 0)) is None
    shape = load_model_shape(tiny_models["llama"])
    cuda = torch.device("cuda", 0)  # planning reads no GPU with the dense and paged caches
    for paged, backend in ((False, "dense"), (True, "auto")):
        cfg = CacheConfig(kv_cache_memory=1024**2, kv_cache_backend=backend)
        plan = plan_cache(cfg, shape, torch.float16, cuda, 4, 128, free_device_bytes=gib,
                          paged=paged)
        assert plan.budget <= 1024**2
        with pytest.raises(ValueError, match="more than the GPU has free .*lower --kv-cache-memory"):
            plan_cache(cfg, shape, torch.float16, cuda, 4, 128, free_device_bytes=64 * 1024,
                       paged=paged)
    # A budget below one block names the flag that set it.
    with pytest.raises(ValueError, match="raise --gpu-memory-utilization"):
        plan_cache(CacheConfig(kv_cache_backend="dense"), shape, torch.float16, cuda, 4, 128,
                   free_device_bytes=1024)
    with pytest.raises(ValueError, match="raise --kv-cache-memory"):
        plan_cache(CacheConfig(kv_cache_memory=1024, kv_cache_backend="dense"), shape,
                   torch.float16, cuda, 4, 128, free_device_bytes=gib)
