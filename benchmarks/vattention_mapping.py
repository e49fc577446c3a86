"""Mapping speed of the vattention KV cache, and how much of a decode step waits for it.

1. sync growth: ``ensure`` maps on the caller's thread, a whole slot per call ("bulk") or
   one block per call ("block"); then ``reclaim`` unmaps it all.
2. background: ``reserve_ahead`` for every slot, timed until the worker has mapped it.
3. decode loop: 64 requests decode one token per step over a synthetic model step,
   with request churn; the share of wall time spent inside ``ensure`` waiting for
   mapping, with and without map-ahead hints.
4. cold map (cuda): one ``Space.map`` of a 1,984-token Llama-3-8B prefix in the ``mega``
   layout (124 MiB of K and of V) by page size: 2 MiB (124 pages), 4 MiB, 8 MiB.

    python benchmarks/vattention_mapping.py                      # cuda, Llama-3-8B shape
    python benchmarks/vattention_mapping.py --backend cpu --quick  # smoke test on a host
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, require_cuda, run_info, write_json

from vattention import KVCache

GIB = 1 << 30
MIB = 1 << 20
SHAPE = (32, 8, 128)  # Llama-3-8B: layers, kv heads, head dim


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cache(args: argparse.Namespace, layout: str, slots: int, max_len: int) -> KVCache:
    layers, heads, dim = SHAPE
    return KVCache(
        layers,
        heads,
        dim,
        max_slots=slots,
        max_len=max_len,
        dtype=torch.bfloat16,
        device=args.device,
        layout=layout,
        page_bytes=args.page_bytes,
        memory_budget=int(args.budget_gib * GIB),
        backend=args.backend,
    )


def _row(kind: str, layout: str, cache: KVCache, blocks: int, seconds: float) -> dict[str, Any]:
    pages = blocks * cache.geometry.pages_per_block
    nbytes = blocks * cache.geometry.block_bytes
    return {
        "test": kind,
        "layout": layout,
        "page_bytes": cache.geometry.page_bytes,
        "pages": pages,
        "seconds": seconds,
        "pages_per_s": pages / seconds if seconds else None,
        "GB_per_s": nbytes / seconds / 1e9 if seconds else None,
        "us_per_page": seconds / pages * 1e6 if pages else None,
    }


def growth(args: argparse.Namespace, layout: str) -> list[dict[str, Any]]:
    rows = []
    slots, max_len = 16, args.max_len
    for kind in ("sync bulk", "sync block"):
        with _cache(args, layout, slots, max_len) as cache:
            per_slot = min(cache.blocks_per_slot, cache.num_blocks // slots)
            tokens = per_slot * cache.tokens_per_block
            ids = [cache.alloc_slot() for _ in range(slots)]
            _sync(args.device)
            start = time.perf_counter()
            if kind == "sync bulk":
                for slot in ids:
                    cache.ensure(slot, tokens)
            else:
                for u in range(1, per_slot + 1):
                    for slot in ids:
                        cache.ensure(slot, u * cache.tokens_per_block)
            elapsed = time.perf_counter() - start
            blocks = cache.stats()["blocks_mapped_sync"]
            rows.append(_row(kind, layout, cache, blocks, elapsed))
            for slot in ids:
                cache.free_slot(slot)
            start = time.perf_counter()
            released = cache.reclaim()
            rows.append(
                _row("unmap (reclaim)", layout, cache, released, time.perf_counter() - start)
            )
    with _cache(args, layout, slots, max_len) as cache:
        per_slot = min(cache.blocks_per_slot, cache.num_blocks // slots)
        ids = [cache.alloc_slot() for _ in range(slots)]
        start = time.perf_counter()
        for slot in ids:
            cache.reserve_ahead(slot, per_slot * cache.tokens_per_block)
        cache.wait_ahead()
        elapsed = time.perf_counter() - start
        rows.append(
            _row("background", layout, cache, cache.stats()["blocks_mapped_ahead"], elapsed)
        )
    return rows


def decode_loop(args: argparse.Namespace, layout: str, ahead: bool) -> dict[str, Any]:
    """Share of wall time inside ensure() in a decode-heavy run with request churn."""
    rng = random.Random(args.seed)
    slots = 64
    work = torch.randn(args.work_dim, args.work_dim, device=args.device)
    with _cache(args, layout, slots, args.max_len) as cache:
        lookahead = args.lookahead or cache.tokens_per_block
        lengths: dict[int, int] = {}
        targets: dict[int, int] = {}

        def admit() -> None:
            slot = cache.alloc_slot()
            lengths[slot] = rng.randint(16, 1024)  # prompt already prefilled
            targets[slot] = min(args.max_len, lengths[slot] + rng.randint(64, 2048))
            cache.ensure(slot, lengths[slot])

        # Budget permitting, as the scheduler would.
        while len(lengths) < slots and cache.num_free_blocks > cache.blocks_per_slot:
            admit()
        ensure_s = 0.0
        _sync(args.device)
        start = time.perf_counter()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            for slot in list(lengths):
                lengths[slot] += 1
                cache.ensure(slot, lengths[slot])
            ensure_s += time.perf_counter() - t0
            if ahead:
                for slot, n in lengths.items():
                    cache.reserve_ahead(slot, n + lookahead)
            for _ in range(args.work_iters):  # the model's step
                work = torch.tanh(work @ work) * 0.5
            _sync(args.device)  # sampling reads the logits back every step
            for slot in [s for s in lengths if lengths[s] >= targets[s]]:
                cache.free_slot(slot)
                del lengths[slot], targets[slot]
                if cache.num_free_blocks > cache.blocks_per_slot:
                    admit()
        wall = time.perf_counter() - start
        stats = cache.stats()
        return {
            "test": "decode " + ("map-ahead" if ahead else "sync"),
            "layout": layout,
            "steps": args.steps,
            "step_ms": wall / args.steps * 1e3,
            "ensure_share_pct": 100 * ensure_s / wall,
            "map_wait_share_pct": 100 * stats["map_wait_seconds"] / wall,
            "units_sync": stats["blocks_mapped_sync"],
            "units_ahead": stats["blocks_mapped_ahead"],
            "blocks_unmapped": stats["blocks_unmapped"],
        }


def cold_map(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Cold maps of one cached prefix's frames (K and V: two reservations), by page size."""
    from vattention import cuda

    prefix_bytes, reservations, repeats = 124 * MIB, 2, 20  # 1,984 Llama-3-8B tokens
    rows = []
    for page in (2 * MIB, 4 * MIB, 8 * MIB):
        frames = prefix_bytes // page
        space = cuda._load().Space(args.device.index or 0, page, frames, reservations, 256 * page)
        times = []
        for _ in range(repeats):
            _sync(args.device)
            start = time.perf_counter()
            space.map(0, list(range(frames)))
            times.append(time.perf_counter() - start)
            space.unmap(0, frames)
        space.close()
        times.sort()
        median = times[len(times) // 2]
        rows.append(
            {
                "test": "cold map",
                "page_bytes": page,
                "pages": frames * reservations,
                "median_ms": median * 1e3,
                "best_ms": times[0] * 1e3,
                "us_per_page": median / (frames * reservations) * 1e6,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--device", default=None)
    parser.add_argument("--budget-gib", type=float, default=16.0)
    parser.add_argument("--max-len", type=int, default=8192)
    parser.add_argument(
        "--page-bytes",
        "--page-size",
        type=int,
        default=None,
        help="bytes (default: the backend's, 2 MiB on current GPUs)",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--lookahead",
        type=int,
        default=0,
        help="tokens hinted ahead per slot (default: one page of tokens)",
    )
    parser.add_argument("--work-dim", type=int, default=4096)
    parser.add_argument(
        "--work-iters", type=int, default=8, help="matmuls per synthetic model step"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--out", default=None, help="JSON path (default: $OUT/vattention_mapping.json if $OUT)"
    )
    args = parser.parse_args()
    args.device = torch.device(args.device or ("cuda" if args.backend == "cuda" else "cpu"))
    if args.device.type == "cuda" or args.backend == "cuda":
        require_cuda("vattention_mapping")  # the default; --backend cpu runs anywhere
    if args.quick:
        args.budget_gib, args.steps, args.work_dim, args.work_iters = 2.0, 100, 256, 1
    out = args.out or (
        os.path.join(os.environ["OUT"], "vattention_mapping.json")
        if os.environ.get("OUT")
        else None
    )

    cold = cold_map(args) if args.backend == "cuda" else []
    if cold:
        print_table(cold, list(cold[0]))
    rows = []
    for layout in ("per_layer", "mega"):
        rows += growth(args, layout)
    print(
        f"Llama-3-8B shape {SHAPE}, bf16, budget {args.budget_gib} GiB, "
        f"backend {args.backend} on {args.device}, page {rows[0]['page_bytes']} bytes"
    )
    print_table(
        rows, ["test", "layout", "pages", "seconds", "pages_per_s", "GB_per_s", "us_per_page"]
    )
    loops = [
        decode_loop(args, layout, ahead)
        for layout in ("per_layer", "mega")
        for ahead in (False, True)
    ]
    print()
    print_table(
        loops,
        [
            "test",
            "layout",
            "steps",
            "step_ms",
            "ensure_share_pct",
            "map_wait_share_pct",
            "units_sync",
            "units_ahead",
            "blocks_unmapped",
        ],
    )
    write_json(
        out,
        {
            **run_info(),
            "backend": args.backend,
            "shape": SHAPE,
            "budget_gib": args.budget_gib,
            "growth": rows,
            "decode": loops,
            "cold_map": cold,
        },
    )


if __name__ == "__main__":
    main()
