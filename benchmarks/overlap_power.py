"""Does a memory-bound kernel running beside a compute-bound one save time on this card?

Several of the step floors in docs/benchmarks.md take a step's bytes and FLOPs as if they
overlapped (the floor is the larger of the two times). This measures whether they can: bf16
matmuls in a mixed step's gate|up shape (1,024 x 4,096 x 28,672) on one stream, a read-only
reduction over 2 GiB (a stand-in for decode attention, which streams the KV cache) on
another, each alone and then both at once, after seconds of matmuls so the card is in its
power steady state. With ``--carveouts``, the matmuls leave that many SMs free (cuBLASLt's
SM-count target, ``torch._C._set_sm_carveout_experimental``) for the reduction to run on.

``speedup_of_overlap`` = (matmuls alone + reduction alone) / both at once: 1.0 means running
them side by side gains nothing over running them one after the other. ``nvidia-smi``'s
clock and power readings over the run go to ``--clocks`` when given.

    python benchmarks/overlap_power.py --json out/overlap_power.json --clocks out/clocks.csv
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
from collections.abc import Callable
from typing import Any

from common import copy_bandwidth, matmul_rate, print_table, require_cuda, run_info, write_json

TOKENS, HIDDEN, GATE_UP = 1024, 4096, 28672
REDUCE_BYTES = 2 * 2**30


def _timed(calls: list[tuple[Callable[[], object], Any, int]]) -> list[float]:
    """Each (fn, stream, count) enqueued in proportion, interleaved so no stream runs dry
    while the host enqueues; each stream's milliseconds from one common start."""
    import torch

    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    start.record()
    for _, stream, _ in calls:
        stream.wait_stream(torch.cuda.current_stream())
    total = max(n for *_, n in calls)
    for i in range(total):
        for fn, stream, n in calls:
            if i * n // total != (i + 1) * n // total:
                with torch.cuda.stream(stream):
                    fn()
    ends = []
    for _, stream, _ in calls:
        end = torch.cuda.Event(enable_timing=True)
        end.record(stream)
        ends.append(end)
    torch.cuda.synchronize()
    return [start.elapsed_time(e) for e in ends]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.8, help="each phase's length (default: 1.8)")
    ap.add_argument(
        "--carveouts",
        type=int,
        nargs="*",
        default=[16, 32],
        help="SM counts the matmuls leave free, each a case after the default one (default: 16 32)",
    )
    ap.add_argument("--clocks", help="write nvidia-smi's SM clock and power every 250 ms here")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    require_cuda("overlap_power")

    import torch
    import torch.nn.functional as F

    with contextlib.ExitStack() as stack:
        if args.clocks:
            log = stack.enter_context(open(args.clocks, "w", encoding="utf-8"))
            smi = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw",
                 "--format=csv", "-lms", "250"],
                stdout=log,
            )  # fmt: skip
            stack.callback(smi.terminate)
        payload = _run(args, torch, F)
    write_json(args.json, payload)


def _run(args: argparse.Namespace, torch: Any, F: Any) -> dict[str, Any]:
    bw, mm_rate = copy_bandwidth(), matmul_rate()
    a = torch.randn(TOKENS, HIDDEN, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(GATE_UP, HIDDEN, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(REDUCE_BYTES // 2, device="cuda", dtype=torch.bfloat16)
    matmul_flop = 2 * TOKENS * HIDDEN * GATE_UP
    s_mm, s_mem = torch.cuda.Stream(), torch.cuda.Stream()

    def matmul() -> None:
        F.linear(a, w)

    def reduce() -> None:
        x.sum(dtype=torch.float32)

    # Counts for about --seconds each, from warm calls of each (a first call pays its
    # kernel's set-up: timed cold, the reduction read 10x slower).
    _timed([(matmul, s_mm, 5), (reduce, s_mem, 5)])
    mm_ms = _timed([(matmul, s_mm, 20)])[0] / 20
    red_ms = _timed([(reduce, s_mem, 10)])[0] / 10
    n_mm = max(1, int(args.seconds * 1e3 / mm_ms))
    n_red = max(1, int(args.seconds * 1e3 / red_ms))
    _timed([(matmul, s_mm, 3 * n_mm)])  # into the power steady state
    rows = []
    for carveout in [0, *args.carveouts]:
        if carveout:
            torch.backends.cuda.preferred_blas_library("cublaslt")
        torch._C._set_sm_carveout_experimental(carveout or None)
        t_mm = _timed([(matmul, s_mm, n_mm)])[0]
        t_red = _timed([(reduce, s_mem, n_red)])[0]
        t_both = max(_timed([(matmul, s_mm, n_mm), (reduce, s_mem, n_red)]))
        rows.append(
            {
                "sm_carveout": carveout,
                "blas": "cublaslt" if carveout else "default",
                "matmul_alone_ms": t_mm,
                "reduce_alone_ms": t_red,
                "together_ms": t_both,
                "matmul_TFLOP_per_s": n_mm * matmul_flop / t_mm / 1e9,
                "reduce_GB_per_s": n_red * REDUCE_BYTES / t_red / 1e6,
                "speedup_of_overlap": (t_mm + t_red) / t_both,
            }
        )
    torch._C._set_sm_carveout_experimental(None)
    print(f"copy {bw / 1e9:,.0f} GB/s, bf16 matmul {mm_rate / 1e12:,.0f} TFLOP/s (burst)")
    print_table(
        rows,
        ["sm_carveout", "matmul_alone_ms", "reduce_alone_ms", "together_ms",
         "matmul_TFLOP_per_s", "reduce_GB_per_s", "speedup_of_overlap"],
    )  # fmt: skip
    return {
        "info": run_info(),
        "copy_GB_per_s": bw / 1e9,
        "matmul_TFLOP_per_s": mm_rate / 1e12,
        "calls": {"matmul": n_mm, "reduce": n_red},
        "results": rows,
    }


if __name__ == "__main__":
    main()
