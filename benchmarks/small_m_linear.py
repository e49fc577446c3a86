"""Which matmul reads the weights fastest at decode batch sizes (M = 1..16 rows)?

At batch 1 a decode step is ~98% weight reads; cuBLAS picks its kernel by heuristics and
for some shapes leaves most of the chip idle (Llama-3-8B's 4096x4096 o_proj got ~1.6 TB/s
of a 3 TB/s card in the roofline profile). This times, for each projection of a model
shape: ``F.linear`` (cuBLAS as torch configures it), the same with the cuBLASLt backend, and
a skinny Triton kernel (rows padded to 16 for the tensor cores, autotuned over tile shapes),
and reports the weight-read bandwidth of each.

    python benchmarks/small_m_linear.py --preset llama3-8b --json out.json
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from common import bench_ms, print_table, run_info, write_json

SHAPES = {  # (name, in_features, out_features)
    "llama3-8b": [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672),
                  ("down", 14336, 4096), ("lm_head", 4096, 128256)],
    "llama2-7b": [("qkv", 4096, 12288), ("o", 4096, 4096), ("gate_up", 4096, 22016),
                  ("down", 11008, 4096), ("lm_head", 4096, 32000)],
}


@triton.autotune(
    configs=[triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=st)
             for n in (16, 32, 64) for k in (128, 256, 512) for w in (4,) for st in (3, 4, 6)
             if n * k <= 16384],
    key=["M", "N", "K"])
@triton.jit
def _skinny_kernel(X, W, Y, M, N, K, stride_xm, stride_wn, stride_ym,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rm = tl.arange(0, 16)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((16, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(X + rm[:, None] * stride_xm + (k0 + rk)[None, :],
                    mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0.0)
        w = tl.load(W + rn[:, None].to(tl.int64) * stride_wn + (k0 + rk)[None, :],
                    mask=(rn[:, None] < N) & ((k0 + rk)[None, :] < K), other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    tl.store(Y + rm[:, None] * stride_ym + rn[None, :], acc.to(Y.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def skinny_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    _skinny_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](
        x, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0))
    return y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="1,4,16", help="Comma-separated M values (1,4,16).")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    rows = []
    for name, k, n in SHAPES[args.preset]:
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
        for m in (int(v) for v in args.rows.split(",")):
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            ref = F.linear(x.float(), w.float())
            got = skinny_linear(x, w).float()
            err = ((got - ref).norm() / ref.norm()).item()
            row = {"proj": name, "M": m, "K": k, "N": n, "triton_rel_err": err}
            for label, fn in (("cublas", lambda: F.linear(x, w)),
                              ("triton", lambda: skinny_linear(x, w))):
                row[f"{label}_us"] = bench_ms(fn, inner=10) * 1e3
            default = torch.backends.cuda.preferred_blas_library()
            torch.backends.cuda.preferred_blas_library("cublaslt")
            row["cublaslt_us"] = bench_ms(lambda: F.linear(x, w), inner=10) * 1e3
            torch.backends.cuda.preferred_blas_library(default)
            for label in ("cublas", "cublaslt", "triton"):
                row[f"{label}_TBps"] = w.numel() * 2 / row[f"{label}_us"] / 1e6
            row["triton_config"] = str(_skinny_kernel.best_config)
            rows.append(row)
            print(row)
    print_table(rows, ["proj", "M", "N", "K", "cublas_us", "cublaslt_us", "triton_us",
                       "cublas_TBps", "cublaslt_TBps", "triton_TBps", "triton_rel_err"])
    write_json(args.json, {"info": run_info(), "preset": args.preset, "results": rows})


if __name__ == "__main__":
    main()
