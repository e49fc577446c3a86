"""vAttention vs paged: attention kernel times over contexts 1K-16K (GPU).

Both sides run the same Triton kernels (``triton_decode``, ``triton_prefill``); the paged
side translates every position through a block table, the vattention side reads each slot's
virtually contiguous K/V from a real ``vattention.KVCache`` (CUDA backend, pages mapped with the
driver API). The paged pool's blocks are handed out the way concurrent decoding hands them
out (every sequence grows one block in turn), so a sequence's blocks are scattered.

- decode: ``--batch`` sequences, all at the context, one query token each.
- prefill: one chunk of ``min(--chunk, context)`` tokens ending at the context (the rest
  is prefix already in the cache), as a chunked prefill step runs it.

    python benchmarks/attention_kernels.py --json benchmarks/results/attention_kernels_h100.json
"""

from __future__ import annotations

import argparse
import math

import torch
from common import bench_ms, print_table, require_cuda, run_info, write_json

import vattention
from sarathi.model_executor.presets import PRESETS
from sarathi.worker.paged_cache import PagedKVCache
from vattention.backends import default_page_bytes


def paged_cache(
    batch: int, context: int, hkv: int, d: int, block_size: int, shuffle: bool = False
) -> PagedKVCache:
    """Blocks handed out round-robin (concurrent decodes in lockstep: block i of every
    sequence sits side by side), or with ``shuffle`` renumbered at random (a pool after
    much churn)."""
    per_seq = math.ceil(context / block_size)
    cache = PagedKVCache(
        1, hkv, d, batch, context, torch.bfloat16, torch.device("cuda"), block_size, batch * per_seq
    )
    slots = [cache.alloc_slot() for _ in range(batch)]
    for i in range(1, per_seq + 1):
        for s in slots:
            cache.ensure(s, min(i * block_size, context))
    cache.commit()
    if shuffle:
        # The blocks hold random values, so renumbering the table is all a shuffle needs.
        perm = torch.randperm(cache.num_blocks, device="cuda", dtype=torch.int32)
        cache.block_tables.copy_(perm[cache.block_tables.long()])
    return cache


def vattention_cache(
    batch: int, context: int, hkv: int, d: int, layout: str, page_bytes: int | None = None
) -> vattention.KVCache:
    """``per_layer_odd``: per_layer with each slot's virtual extent one page longer when it
    is an even number of pages, so slots do not start a power of two apart."""
    # mega: a layer is a strided view of a token-major tensor; two layers show the stride.
    layers = 2 if layout == "mega" else 1
    max_len = context
    if layout == "per_layer_odd":
        layout = "per_layer"
        row = hkv * d * 2
        tokens_per_block = default_page_bytes("cuda", torch.device("cuda"), row) // row
        if math.ceil(context / tokens_per_block) % 2 == 0:
            max_len += tokens_per_block
    cache = vattention.KVCache(
        layers,
        hkv,
        d,
        batch,
        max_len,
        torch.bfloat16,
        "cuda",
        layout=layout,
        backend="cuda",
        page_bytes=page_bytes,
    )
    for _ in range(batch):
        cache.ensure(cache.alloc_slot(), context)
    return cache


def fill(k: torch.Tensor, v: torch.Tensor) -> None:
    k.normal_()
    v.normal_()


def time_kernels(
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor | None,
    batch: int,
    context: int,
    hq: int,
    d: int,
    chunk: int,
    sms: int,
    decode_config: tuple[int, int] = (4, 2),
) -> tuple[float, float]:
    """(decode ms, prefill ms) over caches k/v (slot layout, or pools with a block table)."""
    # Here, not at the top: Triton is needed to run, not for --help on a machine without it.
    from sarathi.model_executor.attention.triton_decode import decode_attention
    from sarathi.model_executor.attention.triton_prefill import prefill_attention

    dev = torch.device("cuda")
    scale = d**-0.5
    q = torch.randn(batch, hq, d, dtype=torch.bfloat16, device=dev)
    out = torch.empty_like(q)
    slots = torch.arange(batch, device=dev)
    lens = torch.full((batch,), context, device=dev)
    decode = bench_ms(
        lambda: decode_attention(
            q, k, v, slots, lens, scale, None, out, sms, None, table, *decode_config
        ),
        reps=10,
        inner=20,
    )
    n = min(chunk, context)
    qp = torch.randn(n, hq, d, dtype=torch.bfloat16, device=dev)
    outp = torch.empty_like(qp)
    cols = [torch.tensor([x], device=dev) for x in (0, context - n, n, 0)]
    prefill = bench_ms(
        lambda: prefill_attention(qp, k, v, *cols, n, scale, None, outp, table), reps=10, inner=10
    )
    return decode, prefill


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--preset",
        default="llama3-8b",
        choices=sorted(PRESETS),
        help="Model shape whose heads are used (default llama3-8b: 32 query heads, "
        "8 KV heads, head_dim 128).",
    )
    ap.add_argument(
        "--contexts", default="1024,2048,4096,8192,16384", help="Context lengths (comma-separated)."
    )
    ap.add_argument("--batch", type=int, default=32, help="Decode batch size (default 32).")
    ap.add_argument("--chunk", type=int, default=2048, help="Prefill chunk (default 2048).")
    ap.add_argument("--block-sizes", default="16", help="Paged block sizes in tokens (16).")
    ap.add_argument(
        "--paged-order",
        default="lockstep",
        choices=("lockstep", "shuffled"),
        help="Where a sequence's blocks sit in the pool: side by side with the "
        "other sequences' blocks of the same index (lockstep decoding) or "
        "at random (a pool after churn).",
    )
    ap.add_argument(
        "--layouts",
        default="per_layer,mega",
        help="vattention layouts (per_layer, mega, per_layer_odd).",
    )
    ap.add_argument(
        "--decode-config",
        default="4,2",
        help="Decode kernel warps,stages on both sides (default 4,2).",
    )
    ap.add_argument(
        "--page-size",
        type=int,
        default=None,
        help="vattention page size in bytes (default: the engine's, 2 MiB).",
    )
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    require_cuda("attention_kernels")

    p = PRESETS[args.preset]
    hq, hkv = p["num_attention_heads"], p["num_key_value_heads"]
    d = p.get("head_dim", p["hidden_size"] // hq)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    contexts = [int(x) for x in args.contexts.split(",")]
    decode_config = tuple(int(x) for x in args.decode_config.split(","))
    rows = []
    # The first context runs twice: the first pass compiles every kernel variant and
    # brings the clocks up, and is dropped.
    for i, context in enumerate(contexts[:1] + contexts):
        row: dict = {"context": context}
        for layout in args.layouts.split(","):
            cache = vattention_cache(args.batch, context, hkv, d, layout, args.page_bytes)
            k, v = cache.layer(0)
            fill(k[:, :context], v[:, :context])  # past the context nothing is mapped
            dec, pre = time_kernels(
                k, v, None, args.batch, context, hq, d, args.chunk, sms, decode_config
            )
            row[f"decode_us_{layout}"], row[f"prefill_us_{layout}"] = dec * 1e3, pre * 1e3
            cache.close()
        for bs in (int(x) for x in args.block_sizes.split(",")):
            cache = paged_cache(
                args.batch, context, hkv, d, bs, shuffle=args.paged_order == "shuffled"
            )
            k, v = cache.layer(0)
            fill(k, v)
            dec, pre = time_kernels(
                k, v, cache.block_tables, args.batch, context, hq, d, args.chunk, sms, decode_config
            )
            row[f"decode_us_paged{bs}"], row[f"prefill_us_paged{bs}"] = dec * 1e3, pre * 1e3
            cache.close()
        base = args.layouts.split(",")[0]
        ref = int(args.block_sizes.split(",")[0])
        row["decode_speedup"] = row[f"decode_us_paged{ref}"] / row[f"decode_us_{base}"]
        row["prefill_speedup"] = row[f"prefill_us_paged{ref}"] / row[f"prefill_us_{base}"]
        if i:
            rows.append(row)
        torch.cuda.empty_cache()
    columns = list(rows[0])
    print(
        f"{args.preset} heads {hq}/{hkv}x{d}, decode batch {args.batch}, prefill chunk "
        f"{args.chunk}; times in microseconds; speedup = paged / vattention ({base})"
    )
    print_table(rows, columns)
    write_json(args.json, {"info": run_info(), "args": vars(args), "results": rows})


if __name__ == "__main__":
    main()
