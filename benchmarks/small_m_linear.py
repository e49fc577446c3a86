"""Which matmul reads the weights fastest at decode batch sizes (M = 1..16 rows)?

At batch 1 a decode step is ~98% weight reads; cuBLAS picks its kernel by heuristics and
for some shapes leaves most of the chip idle (Llama-3-8B's 4096x4096 o_proj got ~1.6 TB/s
of a 3 TB/s card in the roofline profile). This times, for each projection of a model
shape: ``F.linear`` (cuBLAS as torch configures it), the same with the cuBLASLt backend, and
our split-K Triton GEMV (``gemv.gemv``, one row only) at the configuration the model uses
(``gemv.gemv_config``) and at the best of a sweep of tile shapes and split counts, and
reports the weight-read bandwidth of each. Every time is per call of
a CUDA graph of 20 back-to-back calls, as the kernels run inside the decode graph.

    python benchmarks/small_m_linear.py --preset llama3-8b --json out.json
    python benchmarks/small_m_linear.py --preset llama2-7b --tp 2   # one rank's shapes
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import bench_ms, copy_bandwidth, print_table, require_cuda, run_info, write_json

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sarathi.model_executor.layers import gemv
from sarathi.model_executor.layers.gemv import GemvConfig

SHAPES = {  # (name, in_features, out_features)
    "llama3-8b": [
        ("qkv", 4096, 6144),
        ("o", 4096, 4096),
        ("gate_up", 4096, 28672),
        ("down", 14336, 4096),
        ("lm_head", 4096, 128256),
    ],
    "llama2-7b": [
        ("qkv", 4096, 12288),
        ("o", 4096, 4096),
        ("gate_up", 4096, 22016),
        ("down", 11008, 4096),
        ("lm_head", 4096, 32000),
    ],
}


def graph_us(fn: Callable[[torch.Tensor], object], weights: list[torch.Tensor]) -> float:
    """Microseconds per call of ``fn(w)`` replayed from a CUDA graph of one call per weight
    copy: Triton's Python launch path is slower than these kernels, so timing launches would
    time the host; and the copies together exceed the 50 MB L2, so every call reads its weight
    from memory, as in a model where each layer has its own."""
    fn(weights[0])  # compile
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(weights[0])
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for w in weights:
            fn(w)
    return bench_ms(g.replay, warmup=2, reps=9) * 1e3 / len(weights)


def weight_copies(n: int, k: int) -> list[torch.Tensor]:
    """400 MB in all, and at least two copies."""
    count = max(2, -(-400 * 2**20 // (n * k * 2)))
    return [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") for _ in range(count)]


CONFIGS = [
    GemvConfig(n, k, sp, w)
    for n in (16, 32)
    for k in (128, 256, 512, 1024)
    for sp in (1, 2, 4, 8)
    for w in (4, 8)
]


def _gemv(x: torch.Tensor, w: torch.Tensor, cfg: GemvConfig) -> torch.Tensor:
    return gemv.gemv(x, w, None, cfg)


def best_gemv(x: torch.Tensor, ws: list[torch.Tensor]) -> tuple[GemvConfig, float]:
    best: tuple[GemvConfig, float] | None = None
    for cfg in CONFIGS:
        us = graph_us(functools.partial(_gemv, x, cfg=cfg), ws)
        if best is None or us < best[1]:
            best = (cfg, us)
    return best


def rank_shapes(shapes: list[tuple[str, int, int]], tp: int) -> list[tuple[str, int, int]]:
    """(name, in, out) of one rank's slices under tensor parallelism ``tp``."""
    row_parallel = {"o", "down"}
    return [
        (name, k // tp, n) if name in row_parallel else (name, k, -(-n // tp))
        for name, k, n in shapes
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument(
        "--rows",
        default="1,4",
        help="Comma-separated M values (1,4); the Triton GEMV runs at M = 1 only.",
    )
    ap.add_argument(
        "--tp",
        type=int,
        default=1,
        help="One tensor-parallel rank's shapes: column-parallel outputs (qkv, gate_up, "
        "lm_head) and row-parallel inputs (o, down) divided by this (default 1).",
    )
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    require_cuda("small_m_linear")
    rows = []
    for name, k, n in rank_shapes(SHAPES[args.preset], args.tp):
        ws = weight_copies(n, k)
        w = ws[0]
        for m in (int(v) for v in args.rows.split(",")):
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            row = {"proj": name, "M": m, "K": k, "N": n}
            row["cublas_us"] = graph_us(functools.partial(F.linear, x), ws)
            default = torch.backends.cuda.preferred_blas_library()
            torch.backends.cuda.preferred_blas_library("cublaslt")
            row["cublaslt_us"] = graph_us(functools.partial(F.linear, x), ws)
            torch.backends.cuda.preferred_blas_library(default)
            if m == 1:
                used = gemv.gemv_config(n, k)
                row["default_us"] = graph_us(functools.partial(_gemv, x, cfg=used), ws)
                row["default_config"] = (
                    f"n{used.block_n} k{used.block_k} s{used.splits} w{used.num_warps}"
                )
                cfg, row["triton_us"] = best_gemv(x, ws)
                row["triton_config"] = (
                    f"n{cfg.block_n} k{cfg.block_k} s{cfg.splits} w{cfg.num_warps}"
                )
                ref = F.linear(x.float(), w.float())
                got = gemv.gemv(x, w, None, cfg).float()
                row["triton_rel_err"] = ((got - ref).norm() / ref.norm()).item()
            for label in ("cublas", "cublaslt", "default", "triton"):
                if f"{label}_us" in row:
                    row[f"{label}_TBps"] = w.numel() * 2 / row[f"{label}_us"] / 1e6
            rows.append(row)
            print(row)
    print_table(
        rows,
        [
            "proj",
            "M",
            "N",
            "K",
            "cublas_us",
            "cublaslt_us",
            "default_us",
            "triton_us",
            "cublas_TBps",
            "cublaslt_TBps",
            "default_TBps",
            "triton_TBps",
            "default_config",
            "triton_config",
            "triton_rel_err",
        ],
    )
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s")
    write_json(
        args.json,
        {
            "info": run_info(),
            "preset": args.preset,
            "tp": args.tp,
            "copy_GB_per_s": bw / 1e9,
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
