"""All-reduce latency on this host's GPUs: NCCL against torch's symmetric-memory all-reduce
(one-shot: each rank reads every peer's buffer over NVLink; two-shot: reduce-scatter then
all-gather), each call replayed from a CUDA graph as the engine's layers replay them.

Sizes are the engine's: one row of the hidden state (batch-1 decode), 256 rows (batch-256
decode) and a 1,024-token step, in bf16 at Llama's hidden size 4,096. NVLink multicast
stays off (``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, ``NCCL_NVLS_ENABLE=0``): only the
peer-to-peer forms run.

    python benchmarks/allreduce.py --json $OUT/allreduce.json        # 2 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from common import graph_us, print_table, run_info, write_json

CALLS = 64  # all-reduces per graph: two per layer of a 32-layer model


def _methods(n: int, rank: int) -> dict[str, Callable[[], None]]:
    x = torch.full((n,), float(rank + 1), dtype=torch.bfloat16, device="cuda")
    methods: dict[str, Callable[[], None]] = {"nccl": lambda: dist.all_reduce(x)}
    try:
        import torch.distributed._symmetric_memory as symm_mem

        group = dist.group.WORLD.group_name
        if hasattr(symm_mem, "enable_symm_mem_for_group"):
            symm_mem.enable_symm_mem_for_group(group)
        buf = symm_mem.empty(n, dtype=torch.bfloat16, device="cuda")
        symm_mem.rendezvous(buf, group)
        ops = torch.ops.symm_mem
        if hasattr(ops, "one_shot_all_reduce_copy"):
            methods["symm_one_shot_copy"] = lambda: ops.one_shot_all_reduce_copy(
                buf, x, "sum", group
            )

        def one_shot() -> None:
            buf.copy_(x)
            ops.one_shot_all_reduce(buf, "sum", group)

        def two_shot() -> None:
            buf.copy_(x)
            ops.two_shot_all_reduce_(buf, "sum", group)

        methods["symm_one_shot"] = one_shot
        methods["symm_two_shot"] = two_shot
    except Exception:
        if rank == 0:
            traceback.print_exc()
    return methods


def _rank(rank: int, world: int, store: str, sizes: list[int], out: str) -> None:
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group(
        "nccl", init_method=f"file://{store}", rank=rank, world_size=world, device_id=dev
    )
    rows = []
    for n in sizes:
        for name, fn in _methods(n, rank).items():
            try:
                us = graph_us([fn] * CALLS)
                err = None
            except Exception as e:
                us, err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            rows.append({"method": name, "elements": n, "bytes": 2 * n, "us": us, "error": err})
    if rank == 0:
        with open(out, "w") as f:
            json.dump(rows, f)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=2, help="GPUs (default 2)")
    ap.add_argument(
        "--rows", type=int, nargs="+", default=[1, 256, 1024], help="rows of 4,096 bf16"
    )
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args()
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if torch.cuda.device_count() < args.world:
        raise SystemExit(f"needs {args.world} GPUs, found {torch.cuda.device_count()}")
    sizes = [r * 4096 for r in args.rows]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.json")
        tmp.spawn(_rank, args=(args.world, os.path.join(d, "store"), sizes, out), nprocs=args.world)
        with open(out) as f:
            rows = json.load(f)
    nccl = {r["elements"]: r["us"] for r in rows if r["method"] == "nccl"}
    for r in rows:
        r["vs_nccl"] = (
            r["us"] / nccl[r["elements"]] if r["us"] and nccl.get(r["elements"]) else None
        )
    print_table(rows, ["method", "bytes", "us", "vs_nccl", "error"])
    write_json(
        args.json,
        {
            "benchmark": "allreduce",
            **run_info(),
            "calls_per_graph": CALLS,
            "world": args.world,
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
