"""Offline throughput: N requests with random prompt/output lengths, output tokens per second.

The default workload is nano-vllm's: 256 requests, prompt and output lengths uniform in
[100, 1024], ``ignore_eos``. ``--baseline hf`` runs transformers' ``generate`` on the same
requests in the same run (batched with left padding, in batches sorted by length; only the
requested tokens are counted) and prints the ratio. With a ``--preset`` shape the random
weights are then made by transformers and saved as safetensors, so both engines run the
same weights.

On a GPU the run also measures the card's copy bandwidth BW and bf16 matmul rate MM (before
and after the workload, the better of each) and prints the fraction of the workload's
hardware limit reached, T_lb / T, where T_lb assumes perfect batching and no host cost:
every prompt's matmul and attention FLOPs at MM, then for each decode round k (every
request with o_i >= k decodes its k-th token) the larger of reading the weights plus those
requests' KV cache at BW and their matmul FLOPs at MM:

    T_lb = sum_i (2 P p_i + A(p_i)) / MM
           + sum_k max((W + kv * sum_{i: o_i >= k} (p_i + k)) / BW,
                       2 P' |{i: o_i >= k}| / MM)

P: matmul parameters of the layers, P' = P plus the LM head, W: bytes of weights a decode
step reads (layers and LM head), kv: KV bytes per token, A(p): causal attention FLOPs of a
p-token prompt.

MM is what the card does in a burst of matmuls at its boost clock. Under steady matmuls a
power-capped card runs slower (an H200 at its 700 W limit: ~1,600 MHz instead of 1,980), so
the run also measures that sustained rate (``sustained_matmul_rate``) and prints the bound
at it beside the first: the fraction against the burst rate is the strict one, the other
what a card that stays at its power limit allows.

It also prints where the time went: the engine's steps by kind (mixed: with a prefill chunk;
decode, by batch size), each kind's wall time beside the floor of its own steps (the larger
of their bytes at BW and their FLOPs at MM, the same quantities per step). A step's time is
the interval between two schedules; under overlapped scheduling that interval ends when the
step before's results arrive, which shifts the kinds by one step, a few steps in a run.

    python benchmarks/throughput.py --preset qwen3-0.6b --load-format dummy   # GPU
    python benchmarks/throughput.py --num-requests 32 --max-len 128           # demo, CPU
    python benchmarks/throughput.py --preset llama3-8b --tp 2 1               # 2 GPUs
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import tempfile
import time
from dataclasses import dataclass

import torch
from common import (
    add_engine_arg,
    copy_bandwidth,
    costs,
    engine_args,
    matmul_rate,
    print_table,
    run_info,
    sustained_matmul_rate,
    sync,
    write_json,
)

from sarathi import LLM, SamplingParams
from sarathi.executor.uni import UniExecutor
from sarathi.model_executor.model_shape import ModelShape


def lower_bound_seconds(
    shape: ModelShape, elem: int, requests: list[tuple[list[int], int]], bw: float, mm: float
) -> float:
    """T_lb of the module docstring for ``requests`` (prompt ids, output length)."""
    c = costs(shape, elem)
    p_layers, p_all, weight_bytes, kv = c.p_layers, c.p_layers + c.p_head, c.weight_bytes, c.kv
    t = 0.0
    for prompt, _ in requests:
        p = len(prompt)
        t += (2 * p_layers * p + c.attention_flops(0, p)) / mm
    outs = sorted(o for _, o in requests)
    prompts_by_out = sorted(((o, len(pr)) for pr, o in requests))
    active_prompt = sum(p for _, p in prompts_by_out)
    active = len(outs)
    j = 0  # requests with o_i < k are finished
    for k in range(1, outs[-1] + 1):
        while j < len(prompts_by_out) and prompts_by_out[j][0] < k:
            active_prompt -= prompts_by_out[j][1]
            active -= 1
            j += 1
        kv_bytes = kv * (active_prompt + active * k)
        t += max((weight_bytes + kv_bytes) / bw, 2 * p_all * active / mm)
    return t


@dataclass(frozen=True)
class StepRecord:
    """One engine step as scheduled: when, its decodes and their context tokens, its prefill
    chunks as (cached tokens before the chunk, chunk tokens)."""

    at: float
    decodes: int
    decode_context: int
    chunks: tuple[tuple[int, int], ...]


def record_steps(llm: LLM) -> list[StepRecord]:
    """Record every step the engine schedules with work, until ``stop_recording``."""
    records: list[StepRecord] = []
    scheduler = llm.engine.scheduler
    schedule = scheduler.schedule

    def recorded():  # type: ignore[no-untyped-def]
        plan = schedule()
        if plan.decodes or plan.chunks:
            records.append(
                StepRecord(
                    time.perf_counter(),
                    len(plan.decodes),
                    sum(seq.num_computed + 1 for seq in plan.decodes),
                    tuple((seq.num_computed, n) for seq, n in plan.chunks),
                )
            )
        return plan

    scheduler.schedule = recorded  # type: ignore[method-assign]
    return records


def stop_recording(llm: LLM) -> None:
    del llm.engine.scheduler.schedule  # the instance attribute set by record_steps


def step_breakdown(
    shape: ModelShape,
    elem: int,
    records: list[StepRecord],
    end: float,
    bw: float,
    mm: float,
    mm_sustained: float | None = None,
) -> list[dict]:
    """Wall time and floor of the recorded steps by kind (see the module docstring); with
    ``mm_sustained``, also their floor at that matmul rate."""
    c = costs(shape, elem)
    edges = [(1, 63), (64, 127), (128, 191), (192, None)]
    rates = {"floor_s": mm}
    if mm_sustained is not None:
        rates["floor_sustained_s"] = mm_sustained
    groups: dict[str, dict] = {}
    for i, r in enumerate(records):
        wall = (records[i + 1].at if i + 1 < len(records) else end) - r.at
        tokens = r.decodes + sum(n for _, n in r.chunks)
        keys = r.decode_context + sum(cached + n for cached, n in r.chunks)
        attention = sum(c.attention_flops(*chunk) for chunk in r.chunks)
        flops = 2 * c.p_layers * tokens + 2 * c.p_head * (r.decodes + len(r.chunks)) + attention
        read_s = (c.weight_bytes + c.kv * keys) / bw
        if r.chunks:
            kind = "mixed" if r.decodes else "prefill"
        else:
            kind = _decode_kind(*next(e for e in edges if e[1] is None or r.decodes <= e[1]))
        g = groups.setdefault(kind, {"steps": 0, "seconds": 0.0, **dict.fromkeys(rates, 0.0)})
        g["steps"] += 1
        g["seconds"] += wall
        for key, rate in rates.items():
            g[key] += max(read_s, flops / rate)
    order = ["prefill", "mixed"] + [_decode_kind(lo, hi) for lo, hi in edges]
    rows = [{"kind": k, **groups[k]} for k in order if k in groups]
    for row in rows:
        row["ms_per_step"] = 1e3 * row["seconds"] / row["steps"]
        row["frac_of_floor"] = row["floor_s"] / row["seconds"]
        if "floor_sustained_s" in row:
            row["frac_of_sustained_floor"] = row["floor_sustained_s"] / row["seconds"]
    return rows


def _decode_kind(lo: int, hi: int | None) -> str:
    return f"decode {lo}-{hi}" if hi else f"decode {lo}+"


def make_requests(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [
        ([rng.randrange(10, vocab - 1) for _ in range(rng.randint(lo, hi))], rng.randint(lo, hi))
        for _ in range(n)
    ]


def run_ours(
    llm: LLM, requests: list[tuple[list[int], int]]
) -> tuple[dict, list[StepRecord], float]:
    """The workload's result row, its steps as scheduled, and when the last one ended."""
    params = [
        SamplingParams(temperature=0.6, max_tokens=out, ignore_eos=True) for _, out in requests
    ]
    llm.generate([requests[0][0]], SamplingParams(max_tokens=4))  # warm-up
    sync()
    records = record_steps(llm)
    t0 = time.perf_counter()
    try:
        outs = llm.generate([p for p, _ in requests], params)
        sync()
        end = time.perf_counter()
    finally:
        stop_recording(llm)
    elapsed = end - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    row = {
        "engine": "sarathi",
        "seconds": elapsed,
        "output_tokens": tokens,
        "tokens_per_s": tokens / elapsed,
    }
    return row, records, end


def run_engine(
    model: str, kwargs: dict, args: argparse.Namespace
) -> tuple[LLM, dict, list[tuple[list[int], int]], list[StepRecord], float]:
    """Start an engine, run the workload on it: the engine, its result row, the requests,
    the steps and when the last one ended."""
    t0 = time.perf_counter()
    llm = LLM(model, **kwargs)
    startup_s = time.perf_counter() - t0
    requests = make_requests(
        args.num_requests,
        args.min_len,
        args.max_len,
        min(llm.engine.shape.vocab_size, len(llm.get_tokenizer())),
        args.seed,
    )
    row, records, end = run_ours(llm, requests)
    executor = llm.engine.executor
    row.update(
        tensor_parallel_size=llm.engine.config.parallel.tensor_parallel_size,
        cuda_graphs=executor.cuda_graphs,
        startup_s=startup_s,
    )
    if isinstance(executor, UniExecutor) and executor.worker.runner.graphs is not None:
        graphs = executor.worker.runner.graphs
        row["graph_replays"] = dict(graphs.replays)
        row["capture_s"] = graphs.capture_seconds
    return llm, row, requests, records, end


def run_hf(
    path: str,
    requests: list[tuple[list[int], int]],
    dtype: torch.dtype,
    device: torch.device,
    batch: int,
) -> dict:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    order = sorted(range(len(requests)), key=lambda i: requests[i][1])
    tokens = 0
    sync()
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        group = [requests[i] for i in order[start : start + batch]]
        width = max(len(p) for p, _ in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, (p, _) in enumerate(group):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        new = max(out for _, out in group)
        with torch.no_grad():
            model.generate(
                ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=True,
                temperature=0.6,
                pad_token_id=0,
            )
        tokens += sum(out for _, out in group)
    sync()
    elapsed = time.perf_counter() - t0
    return {
        "engine": f"transformers (batch {batch})",
        "seconds": elapsed,
        "output_tokens": tokens,
        "tokens_per_s": tokens / elapsed,
    }


def save_random_weights(folder: str, dtype: torch.dtype, seed: int) -> None:
    """Random weights of the folder's config.json (transformers' own init), as safetensors."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.AutoConfig.from_pretrained(folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    _free_device_memory()


def _free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="Model folder (default: the demo model).")
    ap.add_argument(
        "--preset",
        default=None,
        help="A real model shape with random weights (qwen3-0.6b, llama2-7b, "
        "llama3-8b); implies --load-format dummy.",
    )
    ap.add_argument("--num-requests", type=int, default=256, help="Requests (default 256).")
    ap.add_argument("--min-len", type=int, default=100, help="Shortest prompt/output (100).")
    ap.add_argument("--max-len", type=int, default=1024, help="Longest prompt/output (1024).")
    ap.add_argument(
        "--baseline",
        choices=("none", "hf"),
        default="none",
        help="Also run transformers' generate on the same requests.",
    )
    ap.add_argument("--hf-batch", type=int, default=16, help="Batch size of the hf baseline.")
    ap.add_argument("--dtype", default="bfloat16", help="Weights dtype (bfloat16).")
    ap.add_argument("--seed", type=int, default=0, help="Workload seed.")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    ap.add_argument(
        "--tp",
        type=int,
        nargs="+",
        default=[],
        help="Tensor-parallel sizes to run one after another on the same requests, e.g. "
        "--tp 2 1 (prints each one's ratio to TP=1); default: one run as configured.",
    )
    add_engine_arg(ap)
    args = ap.parse_args()

    model = args.model
    extra: dict = {}
    if args.preset:
        from sarathi.model_executor.presets import write_preset

        model = write_preset(args.preset, tempfile.mkdtemp(prefix="preset-"))
        if args.baseline == "hf":
            save_random_weights(model, getattr(torch, args.dtype), args.seed)
        else:
            extra["load_format"] = "dummy"
    extra.update(engine_args(args.engine_arg))
    extra.setdefault("max_model_len", 2 * args.max_len + 16)
    # The default workload outgrows the demo model's 2,048 positions; this measures speed on
    # random weights, where positions past them cost what trained ones would.
    os.environ.setdefault("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", "1")
    if args.tp and args.baseline == "hf":
        ap.error("--tp and --baseline hf do not mix: the baseline runs on one engine's setup")
    # The card's ceilings, before the runs and again after them (the better of the two):
    # the bound should not move with the state the runs leave the card in.
    before = (copy_bandwidth(), matmul_rate()) if torch.cuda.is_available() else None
    sustained = sustained_matmul_rate() if before is not None else None
    _free_device_memory()
    rows: list[dict] = []
    steps: list[tuple[list[StepRecord], float]] = []
    # Larger sizes first: their ranks are child processes that free their GPUs on exit.
    for tp in sorted(args.tp, reverse=True) or [None]:
        kwargs = dict(extra) if tp is None else {**extra, "tensor_parallel_size": tp}
        llm, row, requests, records, end = run_engine(model, kwargs, args)
        rows.append(row)
        steps.append((records, end))
        shape, setup = llm.engine.shape, llm.engine.setup
        llm.engine.shutdown()  # its KV cache and weights go back before the next run
        del llm
        _free_device_memory()
    ceilings: dict = {}
    if before is not None:
        bw, mm = max(before[0], copy_bandwidth()), max(before[1], matmul_rate())
        elem = torch.tensor([], dtype=setup.dtype).element_size()
        t_one = lower_bound_seconds(shape, elem, requests, bw, mm)
        t_sustained = lower_bound_seconds(shape, elem, requests, bw, sustained)
        for row, (records, end) in zip(rows, steps, strict=True):
            # Under tensor parallelism each GPU reads and multiplies its share: the bound
            # of a perfect split is the one-GPU bound over the GPUs (ceilings of one GPU).
            tp_size = row["tensor_parallel_size"]
            row["lower_bound_s"] = t_one / tp_size
            row["frac_of_limit"] = row["lower_bound_s"] / row["seconds"]
            # The same bound at the matmul rate the card sustains under its power limit.
            row["lower_bound_sustained_s"] = t_sustained / tp_size
            row["frac_of_sustained_limit"] = row["lower_bound_sustained_s"] / row["seconds"]
            row["steps"] = step_breakdown(
                shape, elem, records, end, bw * tp_size, mm * tp_size, sustained * tp_size
            )
        ceilings = {
            "copy_GB_per_s": bw / 1e9,
            "matmul_TFLOP_per_s": mm / 1e12,
            "matmul_sustained_TFLOP_per_s": sustained / 1e12,
        }
        print(
            f"copy bandwidth {bw / 1e9:.0f} GB/s, bf16 matmul {mm / 1e12:.0f} TFLOP/s "
            f"({sustained / 1e12:.0f} sustained)"
        )
    one = next((r["tokens_per_s"] for r in rows if r["tensor_parallel_size"] == 1), None)
    if one is not None and len(rows) > 1:
        for row in rows:
            row["vs_tp1"] = row["tokens_per_s"] / one
    if args.baseline == "hf":
        rows.append(run_hf(setup.path, requests, setup.dtype, setup.device, args.hf_batch))
        rows[0]["vs_hf"] = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    print_table(
        rows,
        [
            "engine",
            "tensor_parallel_size",
            "seconds",
            "output_tokens",
            "tokens_per_s",
            "lower_bound_s",
            "frac_of_limit",
            "frac_of_sustained_limit",
            "vs_hf",
            "vs_tp1",
            "startup_s",
            "capture_s",
        ],
    )
    for row in rows:
        if row.get("steps"):
            print(f"\nsteps of {row['engine']} (TP={row['tensor_parallel_size']}):")
            cols = [
                "kind",
                "steps",
                "seconds",
                "ms_per_step",
                "floor_s",
                "frac_of_floor",
                "frac_of_sustained_floor",
            ]
            print_table(row["steps"], cols)
    write_json(
        args.json,
        {
            "info": run_info(),
            "model": args.preset or model,
            "workload": vars(args),
            "results": rows,
            **ceilings,
        },
    )


if __name__ == "__main__":
    main()
