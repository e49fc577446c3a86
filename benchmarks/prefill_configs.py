"""Launch shapes of the prefill attention kernel, timed on a chunked-prefill step (GPU).

One chunk of ``--chunk`` tokens after ``--prefix`` tokens already in the cache, per model
shape, for each (block_m, block_n, warps, stages): milliseconds and TFLOP/s (causal
attention FLOPs: 4 * heads * head_dim * chunk * (prefix + (chunk + 1) / 2)).

    python benchmarks/prefill_configs.py --json prefill_configs.json
"""

from __future__ import annotations

import argparse

import torch
from common import bench_ms, print_table, run_info, write_json

from sarathi.model_executor.attention.metadata import chunk_table
from sarathi.model_executor.attention.triton_kernels import prefill_attention

SHAPES = {"llama3-8b": (32, 8, 128), "qwen3-0.6b": (16, 8, 128), "llama2-7b": (32, 32, 128)}
CONFIGS = [
    (64, 64, 4, 3),
    (64, 64, 4, 4),
    (128, 64, 8, 3),
    (128, 64, 4, 3),
    (128, 32, 4, 3),
    (64, 128, 4, 3),
    (64, 128, 8, 3),
    (128, 128, 8, 2),
    (128, 64, 8, 4),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=448, help="Chunk tokens (448).")
    ap.add_argument("--prefix", type=int, nargs="+", default=[0, 2048], help="Prefix tokens.")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    rows = []
    for model, (hq, hkv, d) in SHAPES.items():
        for prefix in args.prefix:
            n = args.chunk
            max_len = prefix + n
            k = torch.randn(2, max_len, hkv, d, dtype=torch.bfloat16, device="cuda")
            v = torch.randn_like(k)
            q = torch.randn(n, hq, d, dtype=torch.bfloat16, device="cuda")
            out = torch.empty_like(q)
            c = chunk_table([(1, prefix, n)], 0, q.device)
            flops = 4 * hq * d * n * (prefix + (n + 1) / 2)
            for cfg in CONFIGS:

                def run(cfg: tuple[int, int, int, int] = cfg) -> None:
                    prefill_attention(
                        q,
                        k,
                        v,
                        c.slot,
                        c.start,
                        c.length,
                        c.offset,
                        n,
                        d**-0.5,
                        None,
                        out,
                        config=cfg,
                    )

                try:
                    ms = bench_ms(run, reps=30, inner=4)
                except Exception as e:  # a shape the compiler refuses: noted
                    rows.append(
                        {
                            "model": model,
                            "prefix": prefix,
                            "config": str(cfg),
                            "error": type(e).__name__,
                        }
                    )
                    continue
                rows.append(
                    {
                        "model": model,
                        "prefix": prefix,
                        "config": str(cfg),
                        "ms": ms,
                        "TFLOP_per_s": flops / ms / 1e9,
                    }
                )
    print_table(rows, ["model", "prefix", "config", "ms", "TFLOP_per_s", "error"])
    write_json(args.json, {"info": run_info(), "workload": vars(args), "results": rows})


if __name__ == "__main__":
    main()
