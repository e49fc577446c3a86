"""Steps replayed from CUDA graphs (decode and mixed) produce what eager steps produce
(GPU only)."""

from __future__ import annotations

import pytest

from sarathi import LLM, SamplingParams

pytestmark = pytest.mark.gpu


def _run(enforce_eager: bool, backend: str = "triton", chunk_size: int = 32,
         overlap: bool | None = None) -> tuple[list[list[int]], dict[str, int]]:
    llm = LLM("demo", device="cuda", dtype="float32", attention_backend=backend,
              enforce_eager=enforce_eager, max_num_seqs=8, chunk_size=chunk_size,
              overlap_scheduling=overlap)
    # Prompts longer than the chunk: their chunks share steps with the others' decodes.
    prompts = [[5 + i + j for j in range(3 + 23 * i)] for i in range(6)]
    # Different lengths: the batch shrinks as requests finish, crossing graph buckets; one
    # seeded sampled request checks the per-slot options and generators.
    params = [SamplingParams(temperature=0.0, max_tokens=12 + 9 * i, ignore_eos=True)
              for i in range(5)]
    params.append(SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=30,
                                 ignore_eos=True))
    outs = llm.generate(prompts, params)
    graphs = llm.engine.executor.worker.runner.graphs
    replays = dict(graphs.replays) if graphs is not None else {}
    llm.engine.shutdown()
    return [o.outputs[0].token_ids for o in outs], replays


@pytest.mark.parametrize("overlap", [False, True])
def test_graphed_steps_match_eager(overlap: bool) -> None:
    eager, none = _run(True, overlap=overlap)
    graphed, replays = _run(False, overlap=overlap)
    assert not none
    assert replays["decode"] > 0 and replays["mixed"] > 0, replays
    assert graphed == eager


def test_paged_backend_matches_vattention_eager_and_graphed() -> None:
    """The paged baseline on the GPU: the same tokens as the vattention cache, with graphs
    (the block table is a static tensor updated in place between replays)."""
    eager, _ = _run(True)
    paged_eager, _ = _run(True, "paged")
    paged_graphed, replays = _run(False, "paged")
    assert replays["decode"] > 0 and replays["mixed"] > 0, replays
    assert paged_eager == eager
    assert paged_graphed == eager


def test_steps_larger_than_the_graphs_run_eagerly() -> None:
    """The vllm policy's whole prefills exceed the token budget's graphs: eager, same tokens."""
    llm = LLM("demo", device="cuda", dtype="float32", max_num_seqs=4, chunk_size=16,
              scheduler="vllm")
    ref = LLM("demo", device="cuda", dtype="float32", max_num_seqs=4, chunk_size=16,
              scheduler="vllm", enforce_eager=True)
    prompts = [[7 + j for j in range(40 + 10 * i)] for i in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    want = [o.outputs[0].token_ids for o in ref.generate(prompts, params)]
    assert got == want
