"""Sarathi vs vLLM scheduling at the same request rate: tail time-between-tokens and throughput.

Requests arrive as a Poisson process (seeded; the same arrivals for every policy) and are fed
to the offline engine at their arrival times. Every generated token is time-stamped when the
step that produced it returns, so a decode stalled behind a long prefill shows up as one long
gap. Sarathi-Serve's claim: chunked prefills mixed with decodes give a much lower tail TBT at
equal or higher throughput than whole prefills that pause the decodes (the ``vllm`` policy).

    python benchmarks/scheduling.py --preset llama3-8b --rate 4 --num-requests 128   # GPU
    python benchmarks/scheduling.py --num-requests 24 --rate 4 --max-prompt 256       # demo, CPU
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import tempfile
import time

from common import print_table, run_info, write_json

from sarathi import LLM, SamplingParams


def workload(args: argparse.Namespace, vocab: int) -> list[tuple[float, list[int], int]]:
    """(arrival second, prompt ids, output tokens) per request."""
    rng = random.Random(args.seed)
    t, out = 0.0, []
    for _ in range(args.num_requests):
        t += rng.expovariate(args.rate)
        prompt = [
            rng.randrange(10, vocab - 1)
            for _ in range(rng.randint(args.min_prompt, args.max_prompt))
        ]
        out.append((t, prompt, rng.randint(args.min_output, args.max_output)))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(llm: LLM, requests: list[tuple[float, list[int], int]], scheduler: str) -> dict:
    engine = llm.engine
    stamps: dict[str, list[float]] = {}
    arrival: dict[str, float] = {}
    pending = list(enumerate(requests))
    start = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        now = time.perf_counter() - start
        while pending and pending[0][1][0] <= now:
            i, (at, prompt, n_out) = pending.pop(0)
            rid = f"{scheduler}-{i}"
            engine.add_request(
                prompt,
                SamplingParams(temperature=0, max_tokens=n_out, ignore_eos=True),
                request_id=rid,
            )
            arrival[rid], stamps[rid] = start + at, []
        if not engine.has_unfinished_requests():
            # Idle until the next arrival: this is the workload's clock, not synchronisation.
            time.sleep(max(0.0, pending[0][1][0] - now))
            continue
        outs = engine.step()
        t = time.perf_counter()
        for out in outs:
            stamps[out.request_id].extend([t] * out.outputs[0].num_new_tokens)
    elapsed = time.perf_counter() - start
    tbt = [b - a for ts in stamps.values() for a, b in itertools.pairwise(ts) if b > a]
    ttft = [ts[0] - arrival[rid] for rid, ts in stamps.items() if ts]
    tokens = sum(len(ts) for ts in stamps.values())
    return {
        "scheduler": scheduler,
        "requests": len(stamps),
        "seconds": elapsed,
        "output_tok_per_s": tokens / elapsed,
        "tbt_p50_ms": pct(tbt, 0.5) * 1e3,
        "tbt_p99_ms": pct(tbt, 0.99) * 1e3,
        "tbt_max_ms": max(tbt, default=0) * 1e3,
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": pct(ttft, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="Model folder (default: the demo model).")
    ap.add_argument(
        "--preset",
        default=None,
        help="Real shape with random weights "
        "(qwen3-0.6b, llama2-7b, llama3-8b); implies --load-format dummy.",
    )
    ap.add_argument("--num-requests", type=int, default=128, help="Requests (128).")
    ap.add_argument("--rate", type=float, default=4.0, help="Mean arrivals per second (4).")
    ap.add_argument("--min-prompt", type=int, default=256, help="Shortest prompt (256).")
    ap.add_argument("--max-prompt", type=int, default=4096, help="Longest prompt (4096).")
    ap.add_argument("--min-output", type=int, default=64, help="Fewest output tokens (64).")
    ap.add_argument("--max-output", type=int, default=512, help="Most output tokens (512).")
    ap.add_argument(
        "--chunk-size",
        type=int,
        nargs="+",
        default=[512],
        help="Token budget per step (512); several values: one run of each "
        "policy per value (the vllm policy prefills whole prompts whatever "
        "the budget, so it runs once, at the first).",
    )
    ap.add_argument(
        "--schedulers",
        nargs="+",
        default=["sarathi", "vllm"],
        help="Policies to compare (default: sarathi vllm).",
    )
    ap.add_argument("--seed", type=int, default=0, help="Workload seed.")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()
    model, extra = args.model, {}
    if args.preset:
        from sarathi.model_executor.presets import write_preset

        model = write_preset(args.preset, tempfile.mkdtemp(prefix="sched-"))
        extra["load_format"] = "dummy"
    # The default workload outgrows the demo model's 2,048 positions; this measures speed on
    # random weights, where positions past them cost what trained ones would.
    os.environ.setdefault("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", "1")
    rows = []
    runs = [
        (sched, c)
        for sched in args.schedulers
        for c in (args.chunk_size if sched == "sarathi" else args.chunk_size[:1])
    ]
    for scheduler, chunk in runs:
        llm = LLM(
            model,
            scheduler=scheduler,
            chunk_size=chunk,
            max_model_len=args.max_prompt + args.max_output + 16,
            **extra,
        )
        vocab = min(llm.engine.shape.vocab_size, len(llm.get_tokenizer()))
        requests = workload(args, vocab)
        llm.generate([requests[0][1][:32]], SamplingParams(max_tokens=4))  # warm-up
        rows.append({"chunk_size": chunk, **run(llm, requests, scheduler)})
        llm.engine.shutdown()
        del llm
    print_table(rows, list(rows[0]))
    write_json(
        args.json,
        {
            "info": run_info(),
            "model": args.preset or model,
            "workload": vars(args),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
