"""Decode steps replayed from CUDA graphs produce what eager steps produce (GPU only)."""

from __future__ import annotations

import pytest

from sarathi import LLM, SamplingParams

pytestmark = pytest.mark.gpu


def _run(enforce_eager: bool, backend: str = "triton", graph_logits: bool = True
         ) -> tuple[list[list[int]], bool]:
    llm = LLM("demo", device="cuda", dtype="float32", attention_backend=backend,
              enforce_eager=enforce_eager, max_num_seqs=8, graph_logits=graph_logits)
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
    outside, _ = _run(False, graph_logits=False)
    assert not used_eager and used_graphs
    assert graphed == eager
    assert outside == eager


def test_paged_backend_matches_vattention_eager_and_graphed() -> None:
    """The paged baseline on the GPU: the same tokens as the vattention cache, with graphs
    (the block table is a static tensor updated in place between replays)."""
    eager, _ = _run(True)
    paged_eager, _ = _run(True, "paged")
    paged_graphed, used_graphs = _run(False, "paged")
    assert used_graphs
    assert paged_eager == eager
    assert paged_graphed == eager
