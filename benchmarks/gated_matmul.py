"""Is one kernel for the gate|up matmul with SiLU-and-mul in its epilogue
(``layers/gated_matmul.py``) faster than cuBLAS's matmul followed by our SiLU-and-mul kernel?

The separate SiLU-and-mul reads the matmul's [M, 2 * inter] output back and writes [M, inter];
fused, the matmul writes only the product. It pays only where the Triton matmul keeps up with
cuBLAS, so this also times cuBLAS's matmul alone. ``taken`` says whether the engine runs
the kernel at that shape (``gated_config``); ``--sweep`` adds tilings other than its one.

Every time is per call of a CUDA graph of one call per layer's weight (as many as the model
has layers, so every call reads its weight from memory), replayed; the methods alternate over
rounds and each keeps its best median.

    python benchmarks/gated_matmul.py --preset llama3-8b qwen3-0.6b --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
from common import copy_bandwidth, graph_us, matmul_rate, print_table, run_info, write_json

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sarathi.model_executor.kernel_switches import num_sms
from sarathi.model_executor.layers.fused import silu_and_mul
from sarathi.model_executor.layers.gated_matmul import (
    TILING,
    GatedConfig,
    gated_config,
    gated_matmul,
)

SHAPES = {  # hidden, intermediate, layers
    "llama3-8b": (4096, 14336, 32),
    "llama2-7b": (4096, 11008, 32),
    "qwen3-0.6b": (1024, 3072, 28),
}
ROWS = [256, 512, 768, 1024, 1088, 1536, 2048, 4096]


def sweep() -> list[GatedConfig]:
    return [
        GatedConfig(bm, bn, 64, stages, 4 if bm == 64 else 8, persistent)
        for bm, bn, stages, persistent in itertools.product(
            (64, 128), (64, 128), (3, 4), (False, True)
        )
    ]


def time_rows(
    ws: list[torch.Tensor], m: int, rounds: int, tilings: list[GatedConfig], mm: float
) -> list[dict]:
    """Rows of the table for one shape: every method's best time over ``rounds``."""
    inter, hidden = ws[0].shape[0] // 2, ws[0].shape[1]
    x = torch.randn(m, hidden, device="cuda", dtype=torch.bfloat16)
    gate_up = torch.empty(m, 2 * inter, device="cuda", dtype=torch.bfloat16)
    ref = silu_and_mul(x @ ws[0].T, inter)

    def cublas_silu(w: torch.Tensor) -> torch.Tensor:
        torch.matmul(x, w.T, out=gate_up)
        return silu_and_mul(gate_up, inter)

    methods = {
        "cublas": lambda w: torch.matmul(x, w.T, out=gate_up),
        "cublas+silu": cublas_silu,
        "gated": lambda w: gated_matmul(x, w, inter),
    }
    for cfg in tilings:
        try:
            gated_matmul(x, ws[0], inter, config=cfg)
        except Exception as e:  # a tiling that does not fit is left out
            print(f"skip {cfg}: {type(e).__name__}")
            continue
        methods[str(cfg)] = lambda w, cfg=cfg: gated_matmul(x, w, inter, config=cfg)
    for name, fn in methods.items():
        if not name.startswith("cublas"):
            err = (fn(ws[0]).float() - ref.float()).abs().max().item()
            assert err <= 0.02 * ref.float().abs().max().item(), (name, err)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            us = graph_us([lambda w=w, fn=fn: fn(w) for w in ws])
            best[name] = min(best.get(name, float("inf")), us)
    taken = gated_config(m, inter, num_sms(x.device)) is not None
    flops = 2 * m * hidden * 2 * inter
    return [
        {
            "rows": m,
            "method": name,
            "us": round(us, 2),
            "of_matmul_rate": round(flops / (us * 1e-6) / mm, 3),
            "speedup": round(best["cublas+silu"] / us, 3),
            "taken": taken,
        }
        for name, us in sorted(best.items(), key=lambda kv: kv[1])
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", nargs="+", default=["llama3-8b"], choices=sorted(SHAPES))
    ap.add_argument("--rows", type=int, nargs="+", default=ROWS)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="also time other tilings")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    bw, mm = copy_bandwidth(), matmul_rate()
    tilings = [c for c in sweep() if c != TILING] if args.sweep else []
    rows = []
    for preset in args.preset:
        hidden, inter, layers = SHAPES[preset]
        ws = [
            torch.randn(2 * inter, hidden, device="cuda", dtype=torch.bfloat16) * 0.02
            for _ in range(layers)
        ]
        for m in args.rows:
            rows += [{"preset": preset, **r} for r in time_rows(ws, m, args.rounds, tilings, mm)]
        del ws
        torch.cuda.empty_cache()
    print(f"copy {bw / 1e9:.0f} GB/s, matmul {mm / 1e12:.0f} TFLOP/s")
    shown = rows if args.sweep else [r for r in rows if r["method"] != "cublas"]
    print_table(shown, ["preset", "rows", "method", "us", "of_matmul_rate", "speedup", "taken"])
    write_json(
        args.json, {"info": run_info(), "copy_bandwidth": bw, "matmul_rate": mm, "rows": rows}
    )


if __name__ == "__main__":
    main()
