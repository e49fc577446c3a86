"""Decode steps replayed from CUDA graphs produce what eager steps produce (GPU only)."""

from __future__ import annotations

import pytest

from sarathi import LLM, SamplingParams

pytestmark = pytest.mark.gpu


def _run(enforce_eager: bool) -> tuple[list[list[int]], bool]:
    llm = LLM("demo", device="cuda", dtype="float32", attention_backend="triton",
              enforce_eager=enforce_eager, max_num_seqs=8)
    prompts = [[5 + i + j for j in range(3 + 5 * i)] for i in range(5)]
    # Different lengths: the batch shrinks as requests finish, crossing graph buckets.
    params = [SamplingParams(temperature=0.0, max_tokens=12 + 9 * i, ignore_eos=True)
              for i in range(5)]
    outs = llm.generate(prompts, params)
    graphs = llm.engine.executor.worker.runner.graphs is not None
    return [o.outputs[0].token_ids for o in outs], graphs


def test_graph_decode_matches_eager() -> None:
    eager, used_eager = _run(True)
    graphed, used_graphs = _run(False)
    assert not used_eager and used_graphs
    assert graphed == eager
