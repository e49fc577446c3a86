"""Tensor parallelism (tp=2) gives the same greedy tokens as one rank, in float32 on CPU."""

import re

import pytest

from models import random_prompts
from sarathi import LLM, SamplingParams
from sarathi.sampling_params import StructuredOutputsParams

NEW_TOKENS = 12


def _greedy(llm: LLM, prompts: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params)]


def _prompts(path: str) -> list[list[int]]:
    import json

    with open(f"{path}/config.json") as f:
        vocab = json.load(f)["vocab_size"]
    # Mixed lengths with a small chunk size: chunked prefills mixed with decodes.
    return random_prompts(5, vocab, seed=3, max_len=40)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_mp_tp2_matches_tp1(tp_models, arch):
    path = tp_models[arch]
    prompts = _prompts(path)
    one = LLM(path, chunk_size=16, max_num_seqs=4)
    expected = _greedy(one, prompts)
    # Overlapped as on a GPU: step N+1 is sent before N's tokens are back, and the ranks
    # resolve its placeholders from the ids rank 0 broadcast.
    llm = LLM(
        path,
        chunk_size=16,
        max_num_seqs=4,
        tensor_parallel_size=2,
        executor="mp",
        overlap_scheduling=True,
    )
    try:
        assert llm.engine.executor.world_size == 2
        assert llm.engine._overlap
        assert _greedy(llm, prompts) == expected
        # Seeded sampling and penalties (which collect the step before) match too.
        seeded = SamplingParams(
            temperature=0.8,
            seed=7,
            max_tokens=NEW_TOKENS,
            ignore_eos=True,
            repetition_penalty=1.3,
        )
        assert [o.outputs[0].token_ids for o in llm.generate(prompts, seeded)] == [
            o.outputs[0].token_ids for o in one.generate(prompts, seeded)
        ]
        # Prompt logprobs: every rank joins the gather of the scored rows' logits.
        scored = SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=2)
        for a, b in zip(llm.generate(prompts, scored), one.generate(prompts, scored)):
            for x, y in zip(a.prompt_logprobs[1:], b.prompt_logprobs[1:], strict=True):
                assert x.keys() == y.keys()
                assert all(abs(x[t].logprob - y[t].logprob) < 1e-4 for t in x)
        # Grammar masks travel in the step's input to the ranks (no overlap with mp).
        constrained = SamplingParams(
            temperature=0, max_tokens=8, structured_outputs=StructuredOutputsParams(regex="[a-c]{3,5}")
        )
        ours = [o.outputs[0].text for o in llm.generate(prompts, constrained)]
        assert ours == [o.outputs[0].text for o in one.generate(prompts, constrained)]
        assert all(re.fullmatch("[a-c]{3,5}", t) for t in ours)
        assert llm.engine.is_alive()
        # The scheduler sees the same capacity; each rank's cache holds its KV heads only.
        assert llm.engine.cache_stats()["blocks_total"] > 0
    finally:
        llm.engine.shutdown()


def test_steps_longer_than_a_ring_slot_stream_through(tp_models, monkeypatch):
    """With slots of 256 bytes every step message spans several slots (a ring of 4 slots
    holds less than one masked step): the ranks put each back together."""
    import sarathi.executor.mp as mp_executor

    monkeypatch.setattr(mp_executor, "_RING_SLOT_BYTES", 256)
    path = tp_models["llama"]
    prompts = _prompts(path)
    one = LLM(path, chunk_size=16, max_num_seqs=4)
    llm = LLM(path, chunk_size=16, max_num_seqs=4, tensor_parallel_size=2, executor="mp")
    try:
        assert llm.engine.executor._ring.handle.slot_bytes == 256
        assert _greedy(llm, prompts) == _greedy(one, prompts)
        constrained = SamplingParams(
            temperature=0, max_tokens=8, structured_outputs=StructuredOutputsParams(regex="[a-c]{3,5}")
        )
        ours = [o.outputs[0].text for o in llm.generate(prompts, constrained)]
        assert ours == [o.outputs[0].text for o in one.generate(prompts, constrained)]
    finally:
        llm.engine.shutdown()


def test_ray_tp2_matches_tp1_and_a_dead_actor_fails_requests(tp_models, local_ray):
    """One Ray engine for both checks: starting Ray actors is the slow part."""
    import os
    import signal
    import time

    from sarathi.executor import WorkerDiedError

    path = tp_models["qwen2"]
    prompts = _prompts(path)
    expected = _greedy(LLM(path, chunk_size=16, max_num_seqs=4), prompts)
    llm = LLM(path, chunk_size=16, max_num_seqs=4, tensor_parallel_size=2, executor="ray")
    try:
        assert _greedy(llm, prompts) == expected
        assert llm.engine.is_alive()
        os.kill(llm.engine.executor.worker_pids()[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerDiedError, match="rank 1"):
            _greedy(llm, prompts)
        assert time.monotonic() - start < 10
        assert not llm.engine.is_alive()
    finally:
        llm.engine.shutdown()


def test_rank_profile_writes_each_ranks_table(tp_models, tmp_path, monkeypatch):
    """SARATHI_RANK_PROFILE: each rank writes the torch profiler's per-op table of ten steps
    after twenty warm ones; the outputs do not change."""
    folder = tmp_path / "prof"
    monkeypatch.setenv("SARATHI_RANK_PROFILE", str(folder))
    path = tp_models["llama"]
    prompt = _prompts(path)[:1]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    one = LLM(path, chunk_size=16, max_num_seqs=4)
    llm = LLM(path, chunk_size=16, max_num_seqs=4, tensor_parallel_size=2, executor="mp")
    try:
        ours = llm.generate(prompt, params)[0].outputs[0].token_ids
        assert ours == one.generate(prompt, params)[0].outputs[0].token_ids
    finally:
        llm.engine.shutdown()
    for rank in (0, 1):
        text = (folder / f"rank{rank}.txt").read_text()
        assert text.startswith("10 steps after 20") and "aten::" in text
        assert text.splitlines()[1].startswith("device")  # its idle gaps (none on the CPU)
