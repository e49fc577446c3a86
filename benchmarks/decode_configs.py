"""Launch shapes of the decode attention kernel, timed on one layer's decode (GPU).

Every sequence of ``--batch`` at ``--context`` tokens in the vattention slot layout
(``per_layer``: a layer's K is ``[slots, len, heads, dim]``; ``mega``: a strided view of
``[slots, len, layers, heads, dim]``, the engine's default), per model shape, for each
(block_n, warps, stages) and number of context splits: microseconds and the fraction of the
card's copy bandwidth measured in the same run (bytes: every key and value read once; a
device-to-device copy also writes, so pure reads can pass 1.0). Calls replay from a CUDA
graph over several copies of the cache, so neither the launch path nor the L2 flatters them.

    python benchmarks/decode_configs.py --json decode_configs.json
"""

from __future__ import annotations

import argparse
import functools
import itertools

import torch
from common import copy_bandwidth, graph_us, print_table, require_cuda, run_info, write_json

from sarathi.model_executor.attention.launch import DecodeLaunch, decode_launch, decode_splits

SHAPES = {"llama3-8b": (32, 8, 128, 32), "qwen3-0.6b": (16, 8, 128, 28)}  # hq, hkv, d, layers
LAUNCHES = [
    DecodeLaunch(block_n, warps, stages)
    for block_n, warps, stages in [(64, 4, 2), (64, 4, 3), (32, 4, 3), (32, 2, 3), (128, 4, 2)]
]


def _kv(layout: str, b: int, ctx: int, hkv: int, d: int, layers: int) -> torch.Tensor:
    if layout == "per_layer":
        return torch.randn(b, ctx, hkv, d, dtype=torch.bfloat16, device="cuda")
    # Only the layer read is filled: the rest is there for the strides (and the pages).
    full = torch.empty(b, ctx, layers, hkv, d, dtype=torch.bfloat16, device="cuda")
    return full[:, :, layers // 2].normal_()


def _case(
    model: str, layout: str, b: int, ctx: int, splits_list: list[int], bw: float
) -> list[dict]:
    """Every launch shape on one (model, layout, batch, context). Each shape is timed over
    enough copies of the cache (400 MB or more) that no call finds its keys in the L2, from
    a CUDA graph (the kernels are shorter than their launch path at batch 64)."""
    # Here, not at the top: Triton is needed to run, not for --help on a machine without it.
    from sarathi.model_executor.attention.triton_decode import decode_attention

    hq, hkv, d, layers = SHAPES[model]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    one = 2 * b * ctx * hkv * d * 2  # bytes of K and V
    caches = [
        (_kv(layout, b, ctx, hkv, d, layers), _kv(layout, b, ctx, hkv, d, layers))
        for _ in range(max(1, -(-400 * 2**20 // one)))
    ]
    q = torch.randn(b, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(q)
    slots = torch.arange(b, dtype=torch.int32, device="cuda")
    lens = torch.full((b,), ctx, dtype=torch.int32, device="cuda")
    rows = []
    default = decode_launch(b, hkv, hq // hkv, sms)
    for launch in LAUNCHES:
        block_n = launch.block_n
        for splits in splits_list:
            calls = [
                functools.partial(
                    decode_attention,
                    q,
                    k,
                    v,
                    slots,
                    lens,
                    d**-0.5,
                    None,
                    out,
                    sms,
                    splits=splits,
                    launch=launch,
                )
                for k, v in caches
            ]
            row = {
                "model": model,
                "layout": layout,
                "batch": b,
                "context": ctx,
                "config": f"{block_n}/{launch.warps}/{launch.stages}",
                "splits": splits,
                "default": launch == default and splits == decode_splits(b, hkv, sms),
            }
            try:
                us = graph_us(calls)
            except Exception as e:  # a shape the compiler refuses: noted
                rows.append({**row, "error": type(e).__name__})
                continue
            rows.append({**row, "us": us, "frac_of_bw": one / (us * 1e-6) / bw})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="Batch sizes.")
    ap.add_argument("--context", type=int, nargs="+", default=[600, 2048], help="Tokens.")
    ap.add_argument("--splits", type=int, nargs="+", default=[1, 2], help="Context splits.")
    ap.add_argument("--layouts", nargs="+", default=["per_layer", "mega"])
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    require_cuda("decode_configs")
    bw = copy_bandwidth()
    rows: list[dict] = []
    cases = itertools.product(args.models, args.layouts, args.batch, args.context)
    for model, layout, b, ctx in cases:
        try:
            rows += _case(model, layout, b, ctx, args.splits, bw)
        except torch.OutOfMemoryError:  # a mega cache at batch 256 on a smaller card
            rows.append({"model": model, "layout": layout, "batch": b, "context": ctx})
            rows[-1]["error"] = "OutOfMemoryError"
            torch.cuda.empty_cache()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s")
    columns = "model layout batch context config splits default us frac_of_bw error"
    print_table(rows, columns.split())
    write_json(
        args.json,
        {"info": run_info(), "workload": vars(args), "copy_GB_per_s": bw / 1e9, "results": rows},
    )


if __name__ == "__main__":
    main()
