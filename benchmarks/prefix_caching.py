"""Prefix caching: the same workload with the cache off and on, per KV layout.

Workloads (random token ids, so nothing but the sharing differs between the runs):

- ``shared``: N requests = one P-token system prompt + U unique tokens (U uniform in
  [100, 200]), O output tokens each, all queued at once.
- ``multiturn``: C conversations of T turns; each turn resends the whole history (the
  previous prompt, the answer, and 100-200 new tokens) and generates O tokens. Turns run in
  rounds: every conversation's turn t, then every conversation's turn t + 1.

Per configuration and cache setting: seconds, output tokens/s, time to first token (p50,
p99; requests queue together, so it includes queueing), the share of prompt tokens the
cache served, and the peak KV memory the running requests use (each shared block once;
cached blocks no request uses are left out, they are free to evict) next to what their
slots see mapped (the difference is what sharing saves). With the cache on, the shared
workload also times mapping a cached P-token prefix into a fresh slot (its driver calls,
after every cached page was unmapped: ``map_ms``; into the freed slot that last held the
same prefix, the common case, which needs no driver call: ``remap_ms``) against
prefilling a P-token prompt.

    python benchmarks/prefix_caching.py --preset llama3-8b --workload shared   # GPU
    python benchmarks/prefix_caching.py --num-requests 16 --prefix-len 96 \\
        --output-len 8 --layouts per_layer,mega,paged                          # demo, CPU
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import tempfile
import time
from typing import Any

import torch
from common import add_engine_arg, engine_args, print_table, run_info, sync, write_json

import vattention
from sarathi import LLM, SamplingParams
from sarathi.executor.uni import UniExecutor
from sarathi.outputs import RequestOutput
from sarathi.sequence import Request, Sequence


def run_batch(
    llm: LLM, prompts: list[list[int]], output_len: int, peak: dict[str, int]
) -> tuple[list[RequestOutput], float]:
    """Queue every prompt at once, step until done; tracks peak mapped bytes in ``peak``."""
    engine = llm.engine
    params = SamplingParams(temperature=0.6, max_tokens=output_len, ignore_eos=True)
    sync()
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add_request(p, params, request_id=f"b{time.monotonic_ns()}-{i}", final_only=True)
    done: list[RequestOutput] = []
    steps = 0
    while engine.has_unfinished_requests():
        done += [o for o in engine.step() if o.finished]
        steps += 1
        if steps % 8 == 1:
            stats = engine.cache_stats()
            block = stats["mapped_bytes"] // max(1, stats["blocks_used"])
            pc = engine.prefix_cache
            live = (stats["blocks_used"] - (pc.num_evictable if pc else 0)) * block
            for key, value in (
                ("mapped_bytes", live),
                ("virtual_mapped_bytes", stats.get("virtual_mapped_bytes", live)),
            ):
                peak[key] = max(peak.get(key, 0), int(value))
    sync()
    return done, time.perf_counter() - t0


def _ttft(outs: list[RequestOutput]) -> list[float]:
    return sorted(
        o.metrics.first_token_time - o.metrics.arrival_time
        for o in outs
        if o.metrics is not None and o.metrics.first_token_time is not None
    )


def shared_workload(args: argparse.Namespace, vocab: int) -> list[list[int]]:
    rng = random.Random(args.seed)
    prefix = [rng.randrange(10, vocab - 1) for _ in range(args.prefix_len)]
    return [
        prefix + [rng.randrange(10, vocab - 1) for _ in range(rng.randint(100, 200))]
        for _ in range(args.num_requests)
    ]


def run_workload(llm: LLM, args: argparse.Namespace) -> dict[str, Any]:
    vocab = min(llm.engine.shape.vocab_size, len(llm.get_tokenizer()))
    llm.generate([[11, 12, 13]], SamplingParams(max_tokens=2))  # warm-up
    peak: dict[str, int] = {}
    outs: list[RequestOutput] = []
    seconds = 0.0
    prompt_tokens = 0
    if args.workload == "shared":
        prompts = shared_workload(args, vocab)
        outs, seconds = run_batch(llm, prompts, args.output_len, peak)
        prompt_tokens = sum(map(len, prompts))
    else:
        rng = random.Random(args.seed)
        histories = [
            [rng.randrange(10, vocab - 1) for _ in range(rng.randint(100, 200))]
            for _ in range(args.conversations)
        ]
        for _ in range(args.turns):
            done, s = run_batch(llm, histories, args.output_len, peak)
            seconds += s
            outs += done
            prompt_tokens += sum(map(len, histories))
            answers = {o.request_id.rsplit("-", 1)[1]: o.outputs[0].token_ids for o in done}
            histories = [
                h + list(answers[str(i)]) + [rng.randrange(10, vocab - 1) for _ in range(150)]
                for i, h in enumerate(histories)
            ]
    ttft = _ttft(outs)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    pc = llm.engine.prefix_cache
    return {
        "seconds": seconds,
        "output_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))],
        "prompt_tokens": prompt_tokens,
        "cached_share": pc.counters.hits / max(1, pc.counters.queries) if pc else 0.0,
        "peak_mapped_GiB": peak.get("mapped_bytes", 0) / 2**30,
        "peak_virtual_mapped_GiB": peak.get("virtual_mapped_bytes", 0) / 2**30,
    }


def mapping_cost(llm: LLM, args: argparse.Namespace) -> dict[str, float]:
    """Mapping a cached prefix into a fresh slot versus prefilling the same length."""
    engine = llm.engine
    executor = engine.executor
    pc = engine.prefix_cache
    if pc is None or not isinstance(executor, UniExecutor):
        return {}
    runner = executor.worker.runner
    cache = runner.cache
    vocab = min(engine.shape.vocab_size, len(llm.get_tokenizer()))
    prefix = shared_workload(args, vocab)[0][: args.prefix_len]
    probe = Sequence(-1, 0, Request("probe", None, [*prefix, 1], SamplingParams()), [*prefix, 1], 0)
    frames = [runner.cached_frames[b.entry] for b in pc.match(probe)]
    if not frames:
        return {}
    times = []
    for _ in range(5):
        if isinstance(cache, vattention.KVCache):  # unmap cached pages (the paged pool has none)
            cache.reclaim()
        sync()
        t0 = time.perf_counter()
        slot = cache.alloc_slot(frames)
        cache.commit()
        sync()
        times.append(time.perf_counter() - t0)
        cache.free_slot(slot)
    rng = random.Random(args.seed + 1)
    fresh = [rng.randrange(10, vocab - 1) for _ in range(len(frames) * cache.tokens_per_block)]
    one = SamplingParams(max_tokens=1)
    prefill = []
    for _ in range(3):
        fresh[0] += 1  # never a cache hit
        sync()
        t0 = time.perf_counter()
        llm.generate([list(fresh)], one, use_tqdm=False)
        sync()
        prefill.append(time.perf_counter() - t0)
    warm = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        slot = cache.alloc_slot(frames)  # the lowest free slot: the one just freed
        cache.commit()
        sync()
        warm.append(time.perf_counter() - t0)
        cache.free_slot(slot)
    map_s, prefill_s = statistics.median(times), statistics.median(prefill)
    return {
        "map_tokens": len(frames) * cache.tokens_per_block,
        "map_ms": map_s * 1e3,
        "remap_ms": statistics.median(warm) * 1e3,
        "prefill_ms": prefill_s * 1e3,
        "map_over_prefill": map_s / prefill_s,
    }


CONFIGS = {
    "per_layer": {"kv_layout": "per_layer"},
    "mega": {"kv_layout": "mega"},
    "paged": {"attention_backend": "paged"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="Model folder (default: the demo model).")
    ap.add_argument("--preset", default=None, help="A model shape with random weights.")
    ap.add_argument("--workload", choices=("shared", "multiturn"), default="shared")
    ap.add_argument("--num-requests", type=int, default=256, help="shared: requests (256).")
    ap.add_argument("--prefix-len", type=int, default=2000, help="shared: prefix tokens (2000).")
    ap.add_argument("--conversations", type=int, default=64, help="multiturn: conversations.")
    ap.add_argument("--turns", type=int, default=8, help="multiturn: turns (8).")
    ap.add_argument("--output-len", type=int, default=128, help="Output tokens (128).")
    ap.add_argument(
        "--layouts",
        default="per_layer,mega,paged",
        help="Comma-separated configurations: per_layer, mega (vattention layouts), paged.",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    add_engine_arg(ap)
    args = ap.parse_args()

    model = args.model
    extra: dict[str, Any] = {}
    if args.preset:
        from sarathi.model_executor.presets import write_preset

        model = write_preset(args.preset, tempfile.mkdtemp(prefix="preset-"))
        extra["load_format"] = "dummy"
    extra.update(engine_args(args.engine_arg))
    if args.workload == "shared":
        longest = args.prefix_len + 200 + args.output_len
    else:
        longest = args.turns * (200 + 150 + args.output_len)
    extra.setdefault("max_model_len", longest + 16)
    # The default workload outgrows the demo model's 2,048 positions; this measures speed on
    # random weights, where positions past them cost what trained ones would.
    os.environ.setdefault("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", "1")

    rows = []
    for name in args.layouts.split(","):
        for caching in (False, True):
            llm = LLM(model, enable_prefix_caching=caching, **CONFIGS[name], **extra)
            row: dict[str, Any] = {"config": name, "prefix_caching": caching}
            row["tokens_per_block"] = llm.engine.executor.capacity().tokens_per_block
            row.update(run_workload(llm, args))
            if caching and args.workload == "shared":
                row.update(mapping_cost(llm, args))
            rows.append(row)
            llm.engine.shutdown()
            del llm
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        off, on = rows[-2], rows[-1]
        on["throughput_x"] = on["tokens_per_s"] / off["tokens_per_s"]
        on["ttft_p50_x"] = off["ttft_p50_s"] / on["ttft_p50_s"]
    print_table(
        rows,
        [
            "config",
            "prefix_caching",
            "tokens_per_block",
            "seconds",
            "tokens_per_s",
            "ttft_p50_s",
            "ttft_p99_s",
            "cached_share",
            "peak_mapped_GiB",
            "peak_virtual_mapped_GiB",
            "throughput_x",
            "ttft_p50_x",
            "map_ms",
            "remap_ms",
            "prefill_ms",
            "map_over_prefill",
        ],
    )
    write_json(
        args.json,
        {"info": run_info(), "model": args.preset or model, "workload": vars(args), "rows": rows},
    )


if __name__ == "__main__":
    main()
