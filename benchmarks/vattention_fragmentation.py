"""Fragmentation of the vattention KV cache: mapped_bytes / token_bytes.

64 concurrent requests of mixed lengths grow token by token (sampled at ten points of
their lives) in real model shapes with 2 MiB pages, per_layer vs mega. It is pure
accounting, so the cpu backend (mmap reservations) gives the same numbers as cuda; a
16-token block table (vLLM's default) is listed analytically for reference.

    python benchmarks/vattention_fragmentation.py \
        --out benchmarks/results/vattention_fragmentation_cpu.json
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, require_cuda, run_info, write_json

from vattention import KVCache, plan_geometry

SHAPES = {"llama-2-7b": (32, 32, 128), "llama-3-8b": (32, 8, 128)}
MIB = 1 << 20


def request_lengths(num: int, max_len: int, seed: int) -> list[int]:
    """Final lengths (prompt + output): mostly short chats, some documents, a few long."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(num):
        bucket = rng.random()
        if bucket < 0.5:
            lengths.append(rng.randint(32, 512))
        elif bucket < 0.85:
            lengths.append(rng.randint(513, 2048))
        else:
            lengths.append(rng.randint(2049, max_len))
    return lengths


def measure(
    model: str,
    layout: str,
    backend: str,
    device: str,
    page_bytes: int,
    lengths: list[int],
    max_len: int,
) -> dict[str, Any]:
    layers, heads, dim = SHAPES[model]
    ratios = []
    # A pool of exactly what the final lengths need: the cuda backend creates the whole pool
    # up front, and the full reservation would not fit on the card.
    geometry = plan_geometry(layers, heads, dim, torch.bfloat16, layout, page_bytes)
    budget = sum(geometry.blocks_for(n) for n in lengths) * geometry.block_bytes
    with KVCache(
        layers,
        heads,
        dim,
        max_slots=len(lengths),
        max_len=max_len,
        dtype=torch.bfloat16,
        device=device,
        layout=layout,
        page_bytes=page_bytes,
        memory_budget=budget,
        backend=backend,
    ) as cache:
        slots = [cache.alloc_slot() for _ in lengths]
        for step in range(1, 11):
            for slot, length in zip(slots, lengths, strict=True):
                cache.ensure(slot, max(1, length * step // 10))
            stats = cache.stats()
            ratios.append(stats["mapped_bytes"] / stats["token_bytes"])
        return {
            "model": model,
            "layout": layout,
            "page_MiB": page_bytes / MIB,
            "tokens_per_block": cache.tokens_per_block,
            "unit_MiB": cache.geometry.block_bytes / MIB,
            "ratio_final": ratios[-1],
            "ratio_mean": sum(ratios) / len(ratios),
            "ratio_max": max(ratios),
            "mapped_GiB_final": stats["mapped_bytes"] / (1 << 30),
            "token_GiB_final": stats["token_bytes"] / (1 << 30),
        }


def paged_reference(model: str, lengths: list[int], block: int = 16) -> dict[str, Any]:
    ratios = []
    for step in range(1, 11):
        tokens = [max(1, n * step // 10) for n in lengths]
        ratios.append(sum(-(-t // block) * block for t in tokens) / sum(tokens))
    return {
        "model": model,
        "layout": f"paged{block} (analytic)",
        "tokens_per_block": block,
        "ratio_final": ratios[-1],
        "ratio_mean": sum(ratios) / len(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu", help="cpu (default), cuda or dense")
    parser.add_argument("--device", default=None, help="defaults to cuda for the cuda backend")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=8192)
    # dest page_bytes, the library's word; --page-size is kept for older command lines.
    parser.add_argument("--page-bytes", "--page-size", type=int, default=2 * MIB)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default: $OUT/vattention_fragmentation.json if $OUT)",
    )
    args = parser.parse_args()
    device = args.device or ("cuda" if args.backend == "cuda" else "cpu")
    if device.startswith("cuda") or args.backend == "cuda":
        require_cuda("vattention_fragmentation")
    out = args.out or (
        os.path.join(os.environ["OUT"], "vattention_fragmentation.json")
        if os.environ.get("OUT")
        else None
    )

    lengths = request_lengths(args.requests, args.max_len, args.seed)
    rows = []
    for model in SHAPES:
        for layout in ("per_layer", "mega"):
            rows.append(
                measure(model, layout, args.backend, device, args.page_bytes, lengths, args.max_len)
            )
        rows.append(paged_reference(model, lengths))
    print(
        f"{args.requests} requests, lengths {min(lengths)}..{max(lengths)} "
        f"(mean {sum(lengths) / len(lengths):.0f}), bf16, backend {args.backend}"
    )
    print_table(
        rows,
        [
            "model",
            "layout",
            "tokens_per_block",
            "unit_MiB",
            "ratio_final",
            "ratio_mean",
            "ratio_max",
            "mapped_GiB_final",
            "token_GiB_final",
        ],
    )
    write_json(
        out,
        {
            **run_info(),
            "backend": args.backend,
            "requests": args.requests,
            "max_len": args.max_len,
            "seed": args.seed,
            "lengths": lengths,
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
