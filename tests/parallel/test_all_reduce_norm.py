"""The fused all-reduce + RMSNorm kernel's arithmetic and barrier flags, on the CPU through
Triton's interpreter (the two-GPU test in test_tp_gpu.py checks it across real peers)."""

from __future__ import annotations

from pathlib import Path

from interpreter import needs_triton, run_interpreted


@needs_triton
def test_fused_all_reduce_norm_equals_sum_then_norm() -> None:
    run_interpreted(Path(__file__).with_name("interpreted_all_reduce_norm.py"), timeout_s=300)
