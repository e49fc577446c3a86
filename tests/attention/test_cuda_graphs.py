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


def test_decode_graphs_ending_at_hidden_states_match_eager(monkeypatch) -> None:
    """The form decode graphs take under tensor parallelism (the LM head, whose gather is a
    collective, after the replay), on one GPU."""
    from sarathi.worker.cuda_graph import StepGraphs

    monkeypatch.setattr(StepGraphs, "_lm_head_in_graph", lambda self: False)
    eager, _ = _run(True)
    graphed, replays = _run(False)
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


def _constrained(enforce_eager: bool, overlap: bool) -> list[list[int]]:
    import json

    from sarathi.sampling_params import StructuredOutputsParams

    llm = LLM("demo", device="cuda", dtype="float32", enforce_eager=enforce_eager,
              max_num_seqs=8, chunk_size=32, overlap_scheduling=overlap)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 999},
              "k": {"enum": ["a", "b"]}}, "required": ["n", "k"]}
    specs = [StructuredOutputsParams(json=schema), None, StructuredOutputsParams(regex="[a-f]{4,12}")]
    params = [SamplingParams(temperature=0.9 * (i % 2), seed=i, max_tokens=40,
                             structured_outputs=specs[i % 3]) for i in range(9)]
    outs = llm.generate([[5 + i] * (3 + 11 * i) for i in range(9)], params)
    llm.engine.shutdown()
    for i, o in enumerate(outs):
        if specs[i % 3] is not None and specs[i % 3].json is not None:
            assert o.outputs[0].finish_reason != "stop" or json.loads(o.outputs[0].text)
    return [o.outputs[0].token_ids for o in outs]


def test_grammar_masks_on_graphed_overlapped_steps_match_eager() -> None:
    """Masks computed while the forward runs (overlap) and applied to a graph's logits."""
    assert _constrained(False, True) == _constrained(True, False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_batch1_decode_rope_matches_the_rotary_kernel(monkeypatch, dtype: str) -> None:
    """One sequence: its decode steps take the rotary and the K/V write inside the decode
    kernel (DecodeRope); the same tokens and logprobs as with the rotary kernel first, in
    graphs and eagerly."""
    from sarathi.model_executor.attention.triton_backend import TritonAttention

    def run(enforce_eager: bool) -> tuple[list[int], list[float]]:
        llm = LLM("demo", device="cuda", dtype=dtype, enforce_eager=enforce_eager,
                  max_num_seqs=4)
        params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True, logprobs=0)
        out = llm.generate([[5 + j for j in range(37)]], params, use_tqdm=False)[0].outputs[0]
        llm.engine.shutdown()
        assert out.logprobs is not None
        return out.token_ids, [next(iter(p.values())).logprob for p in out.logprobs]

    fused = [run(True), run(False)]
    monkeypatch.setattr(TritonAttention, "decode_rope", lambda self, *a: None)
    unfused = [run(True), run(False)]
    assert fused == unfused
