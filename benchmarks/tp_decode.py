"""Decode speed at batch 1 with tensor parallelism: tokens/s for each TP size, and the
speed-up over TP=1 (gpt-fast reports 1.61x for Llama-2-7B, TP=2 on A100s: 168.84 vs 104.9).

Random weights in the real shape (``load_format="dummy"``: made on the GPU, no files).
One request: a short prompt is prefilled, then ``--new-tokens`` are decoded one step at a
time through the whole engine (scheduler, executor, sampler); the decode steps are timed.

    python benchmarks/tp_decode.py --out $OUT/tp_decode.json            # 2 GPUs: TP 2 and 1
    python benchmarks/tp_decode.py --model tests-model-dir --device cpu --dtype float32 \
        --new-tokens 16                                                 # plumbing check
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from common import print_table, require_cuda, run_info, write_json

from sarathi import LLM, SamplingParams


def decode_tokens_per_s(llm: LLM, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(decode tokens/s, prefill-to-first-token seconds) of one request."""
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    engine.add_request(prompt, params)
    t0 = time.perf_counter()
    produced = 0
    while produced == 0:  # the prefill step yields the first token
        for out in engine.step():
            produced = len(out.outputs[0].token_ids)
    t1 = time.perf_counter()
    while engine.has_unfinished_requests():
        for out in engine.step():
            produced = len(out.outputs[0].token_ids)
    t2 = time.perf_counter()  # step() returns host-side token ids: the GPU is done
    return (produced - 1) / (t2 - t1), t1 - t0


def measure(model: str, tp: int, args: argparse.Namespace, executor: str = "auto") -> dict:
    kwargs = dict(
        dtype=args.dtype,
        device=args.device,
        load_format=args.load_format,
        max_num_seqs=1,
        max_model_len=args.prompt_len + args.new_tokens + 8,
        kv_cache_memory=args.kv_cache_memory,
        tensor_parallel_size=tp,
        enforce_eager=args.enforce_eager,
    )
    executor = executor if executor != "auto" else ("mp" if tp > 1 else "uni")
    kwargs["executor"] = executor
    start = time.perf_counter()
    llm = LLM(model, **kwargs)
    startup = time.perf_counter() - start
    try:
        graphs = llm.engine.executor.cuda_graphs
        vocab = llm.engine.shape.vocab_size
        prompt = [(7 * i + 11) % (vocab - 10) + 10 for i in range(args.prompt_len)]
        decode_tokens_per_s(llm, prompt, min(8, args.new_tokens))  # warm-up (allocator, NCCL)
        runs = [decode_tokens_per_s(llm, prompt, args.new_tokens) for _ in range(args.repeats)]
    finally:
        llm.engine.shutdown()
        del llm
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    rates = [r for r, _ in runs]
    return {
        "tp": tp,
        "executor": executor,
        "cuda_graphs": graphs,
        "startup_s": startup,
        "decode_tokens_per_s": statistics.median(rates),
        "runs_tokens_per_s": rates,
        "prefill_s": statistics.median(p for _, p in runs),
        "ms_per_token": 1000 / statistics.median(rates),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama2-7b", help="real model shape (random weights)")
    ap.add_argument("--model", default=None, help="a model folder instead of --preset")
    ap.add_argument("--tp", type=int, nargs="+", default=[2, 1], help="TP sizes to measure")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--load-format", default="dummy", choices=("dummy", "auto"))
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-cache-memory", default="2GiB")
    ap.add_argument(
        "--mp-tp1",
        action="store_true",
        help="also TP=1 through the mp executor: the cost of the process hop alone",
    )
    ap.add_argument(
        "--enforce-eager",
        action="store_true",
        help="no CUDA graphs at TP=1 either (an eager-vs-eager comparison)",
    )
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    if args.device != "cpu":
        # "auto" on a machine without a GPU would decode a 7B shape on the CPU for hours.
        require_cuda("tp_decode", max(args.tp))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from sarathi.model_executor.presets import write_preset

            model = write_preset(args.preset, os.path.join(tmp, args.preset))
        # Larger TP sizes first: their ranks are child processes that free their GPUs on
        # exit, while TP=1 runs in this process.
        rows = [measure(model, tp, args) for tp in sorted(args.tp, reverse=True)]
        if args.mp_tp1:
            rows.append(measure(model, 1, args, executor="mp"))
    base = next(
        (r["decode_tokens_per_s"] for r in rows if r["tp"] == 1 and r["executor"] == "uni"), None
    )
    for r in rows:
        r["speedup_vs_tp1"] = r["decode_tokens_per_s"] / base if base else None
    print_table(
        sorted(rows, key=lambda r: r["tp"]),
        [
            "tp",
            "executor",
            "cuda_graphs",
            "decode_tokens_per_s",
            "ms_per_token",
            "speedup_vs_tp1",
            "prefill_s",
            "startup_s",
        ],
    )
    write_json(
        args.out,
        {
            "benchmark": "tp_decode",
            **run_info(),
            "model": args.model or args.preset,
            "dtype": args.dtype,
            "batch": 1,
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "load_format": args.load_format,
            "enforce_eager": args.enforce_eager,
            "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"),
            "reference": {
                "source": "gpt-fast, Llama-2-7B, A100, TP=2 vs 1",
                "tp1_tokens_per_s": 104.9,
                "tp2_tokens_per_s": 168.84,
                "speedup": 1.61,
            },
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
