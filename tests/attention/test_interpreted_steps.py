"""The Triton kernels and the CUDA-graph step layout, checked on the CPU through Triton's
interpreter (the GPU tests check the captured graphs themselves). Needs Triton installed;
skipped without it."""

from __future__ import annotations

from pathlib import Path

from interpreter import needs_triton, run_interpreted


@needs_triton
def test_graph_shaped_steps_match_eager_steps_and_sdpa() -> None:
    run_interpreted(Path(__file__).with_name("interpreted_steps.py"))
