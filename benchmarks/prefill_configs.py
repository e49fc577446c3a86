"""Launch shapes of the prefill attention kernel, timed on a chunked-prefill step (GPU).

One chunk of ``--chunk`` tokens after ``--prefix`` tokens already in the cache, per model
shape, for each (tokens per program, keys per block, warps, stages, GQA packing: the query
heads of a KV group in one program, sharing each key/value block; "ptr": keys and values
through pointer loads instead of tensor descriptors), and on Hopper the warp-specialized
Gluon kernel (``gluon_prefill.py``: 128 tokens, 128-key blocks, two consumer warp groups
and a loader warp, three stages): milliseconds and TFLOP/s
(causal attention FLOPs: 4 * heads * head_dim * chunk * (prefix + (chunk + 1) / 2)), the
calls replayed from a CUDA graph.

    python benchmarks/prefill_configs.py --json prefill_configs.json
"""

from __future__ import annotations

import argparse
import functools

import torch
from common import graph_us, print_table, require_cuda, run_info, write_json

from sarathi.model_executor.attention.launch import PrefillLaunch
from sarathi.model_executor.attention.metadata import PrefillChunk, chunk_table
from sarathi.model_executor.kernel_switches import gluon_hopper

SHAPES = {"llama3-8b": (32, 8, 128), "qwen3-0.6b": (16, 8, 128), "llama2-7b": (32, 32, 128)}
LAUNCHES = [  # the first is the default
    PrefillLaunch(64, 64, 4, 3),
    PrefillLaunch(64, 64, 4, 3, tma=False),
    PrefillLaunch(128, 64, 8, 3, tma=False),
    PrefillLaunch(128, 64, 8, 3),
    PrefillLaunch(128, 64, 8, 4),
    PrefillLaunch(128, 128, 8, 2),
    PrefillLaunch(64, 32, 4, 3),
    PrefillLaunch(16, 64, 4, 3, packed=True),
    PrefillLaunch(32, 64, 4, 3, packed=True),
    PrefillLaunch(32, 64, 8, 3, packed=True),
    PrefillLaunch(32, 128, 8, 3, packed=True),
    PrefillLaunch(64, 64, 8, 3, packed=True),
]


def _name(launch: PrefillLaunch) -> str:
    m, n, w, s = launch.block_m, launch.block_n, launch.warps, launch.stages
    return (
        f"{m}/{n}/{w}/{s}" + (" packed" if launch.packed else "") + ("" if launch.tma else " ptr")
    )


def _case(model: str, prefix: int, n: int) -> list[dict]:
    """Every launch shape on one chunk of ``n`` tokens after ``prefix`` cached ones."""
    # Here, not at the top: Triton is needed to run, not for --help on a machine without it.
    from sarathi.model_executor.attention.triton_prefill import prefill_attention

    hq, hkv, d = SHAPES[model]
    k = torch.randn(2, prefix + n, hkv, d, dtype=torch.bfloat16, device="cuda")
    v = torch.randn_like(k)
    q = torch.randn(n, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(q)
    c = chunk_table([PrefillChunk(1, prefix, n)], 0, q.device)
    flops = 4 * hq * d * n * (prefix + (n + 1) / 2)
    rows = []
    for launch in LAUNCHES:
        row = {"model": model, "prefix": prefix, "config": _name(launch)}
        run = functools.partial(
            prefill_attention,
            q, k, v, c.slot, c.start, c.length, c.offset, n, d**-0.5, None, out,
            launch=launch,
        )  # fmt: skip
        try:
            ms = graph_us([run] * 4) / 1e3  # a graph: shorter than the launch path at prefix 0
        except Exception as e:  # a shape the compiler refuses: noted
            rows.append({**row, "error": type(e).__name__})
            continue
        rows.append({**row, "ms": ms, "TFLOP_per_s": flops / ms / 1e9})
    if gluon_hopper(q.device):  # the warp-specialized kernel the engine runs on Hopper
        from sarathi.model_executor.attention.gluon_prefill import gluon_prefill_attention

        run = functools.partial(
            gluon_prefill_attention,
            q, k, v, c.slot, c.start, c.length, c.offset, n, d**-0.5, out,
        )  # fmt: skip
        ms = graph_us([run] * 4) / 1e3
        rows.append({"model": model, "prefix": prefix, "config": "gluon 128/128/4+4+1/3",
                     "ms": ms, "TFLOP_per_s": flops / ms / 1e9})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=448, help="Chunk tokens (448).")
    ap.add_argument("--prefix", type=int, nargs="+", default=[0, 2048], help="Prefix tokens.")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    require_cuda("prefill_configs")
    rows = [row for model in SHAPES for p in args.prefix for row in _case(model, p, args.chunk)]
    print_table(rows, ["model", "prefix", "config", "ms", "TFLOP_per_s", "error"])
    write_json(args.json, {"info": run_info(), "workload": vars(args), "results": rows})


if __name__ == "__main__":
    main()
