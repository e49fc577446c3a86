"""Engine steps against their hardware floor, and GPU idle time between them.

Starts ``--batch`` requests on a random-weight model, prefills them, then times ``--steps``
engine steps (wall time, unprofiled). Idle share: the GPU's time between one step's work
and the next, from timing events queued around each ``engine.step()`` call, over the span
of the steps. Then as many steps under a CUDA-only trace give the kernels and the busy time
(some kernel or copy running; kernels launched with programmatic dependent launch overlap
their predecessors, so durations are not summed) and two cross-checks of the idle share:
1 - busy / wall of the traced steps (``idle_share_traced``, an upper bound: tracing adds
host work to every launch) and 1 - busy per step / untraced step time
(``idle_share_low``, a lower bound: the traced steps come later, with longer contexts).

Decode steps (default): every step is one token for each of the ``--batch`` sequences.
With ``--mixed``: every step also carries a prefill chunk, filling the token budget (long
prompts with ``max_tokens=1`` queue behind the decodes).

The floor of a step, from the card's copy bandwidth BW and bf16 matmul rate MM measured in
the same run: max((weight bytes + KV bytes read) / BW, matmul and attention FLOPs / MM).
MM is a burst at the boost clock; the floor at the rate the card sustains under its power
limit (``common.sustained_matmul_rate``) is reported beside it.

    python benchmarks/decode_idle.py --preset llama3-8b --batch 64
    python benchmarks/decode_idle.py --preset llama3-8b --batch 64 --mixed
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time

import numpy as np
import torch
from common import (
    add_engine_arg,
    copy_bandwidth,
    costs,
    engine_args,
    gpu_timeline,
    matmul_rate,
    print_table,
    require_cuda,
    run_info,
    sustained_matmul_rate,
    write_json,
)

from sarathi import LLM, SamplingParams
from sarathi.engine.llm_engine import LLMEngine
from sarathi.model_executor.presets import PRESETS, write_preset


def step_work(engine: LLMEngine, ahead: int = 0) -> tuple[float, float]:
    """Bytes read and FLOPs of the step the scheduler would run next (its plan, not run);
    with ``ahead``, of the decode step that many steps later (every running sequence
    decoding)."""
    c = costs(engine.shape, torch.tensor([], dtype=engine.setup.dtype).element_size())
    tokens = kv_tokens = samples = 0
    attn_flops = 0.0
    sched = engine.scheduler
    decodes = [x for x in sched.running if x.remaining == 1]
    budget = sched.chunk_size - len(decodes)
    work = [(x, 1) for x in decodes]
    for seq in [x for x in sched.running if x.remaining > 1] + list(sched.waiting):
        if budget <= 0:
            break
        n = min(seq.remaining, budget)
        work.append((seq, n))
        budget -= n
    for seq, n in work:
        start = seq.num_computed + ahead
        tokens += n
        kv_tokens += start + n
        samples += 1
        attn_flops += c.attention_flops(start, n)
    flops = 2 * c.p_layers * tokens + 2 * c.p_head * samples + attn_flops
    return c.weight_bytes + c.kv * kv_tokens, flops


def floor_ms(work: list[tuple[float, float]], bw: float, mm: float) -> float:
    """The mean floor of steps with this work: max(bytes / BW, FLOPs / MM)."""
    return sum(max(read / bw, flops / mm) for read, flops in work) / len(work) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama3-8b", help="Model shape (random weights).")
    ap.add_argument("--batch", type=int, default=64, help="Concurrent decodes (64).")
    ap.add_argument("--prompt-len", type=int, default=512, help="Decodes' prompt tokens (512).")
    ap.add_argument("--steps", type=int, default=100, help="Timed decode steps (100).")
    ap.add_argument(
        "--mixed",
        action="store_true",
        help="Every step also prefills a chunk that fills the token budget.",
    )
    ap.add_argument(
        "--final-only",
        action="store_true",
        help="Requests as offline generate adds them (outputs only when finished); "
        "default: as the server adds them (an output every step).",
    )
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    add_engine_arg(ap)
    args = ap.parse_args()
    require_cuda("decode_idle")
    extra: dict = {
        "load_format": "dummy",
        "max_model_len": min(8192, PRESETS[args.preset]["max_position_embeddings"]),
        "max_num_seqs": max(args.batch + 8, 16),
    }
    extra.update(engine_args(args.engine_arg))
    # The card's burst ceilings before the engine starts, and again after the steps (the
    # better of each): a reading taken hot, after minutes of work, can be low.
    ceilings = (copy_bandwidth(), matmul_rate())
    torch.cuda.empty_cache()  # the measurements' buffers, before the engine sizes its cache
    llm = LLM(write_preset(args.preset, tempfile.mkdtemp(prefix="idle-")), **extra)
    engine = llm.engine
    params = SamplingParams(temperature=0.6, max_tokens=4096, ignore_eos=True)
    for i in range(args.batch):
        engine.add_request(
            [10 + (i * 7 + j) % 1000 for j in range(args.prompt_len)],
            params,
            request_id=f"idle-{i}",
            final_only=args.final_only,
        )
    # Prefill everything, then a few decode steps to warm caches.
    while any(s.remaining > 1 for s in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for _ in range(10):
        engine.step()
    if args.mixed:
        # Enough long one-token prompts to keep a chunk in every timed step.
        budget = engine.scheduler.chunk_size - args.batch
        for i in range(4 * args.steps * budget // 4000 + 3):
            engine.add_request(
                [11 + (i * 13 + j) % 1000 for j in range(4000)],
                SamplingParams(max_tokens=1),
                request_id=f"chunk-{i}",
            )
        for _ in range(3):
            engine.step()
    torch.cuda.synchronize()
    # Decode steps' work follows from the state now (each step adds one token per sequence),
    # so the timed loop adds no host work but two event records; a mixed step's depends on
    # what the scheduler picks, so it is counted before each step.
    work = [] if args.mixed else [step_work(engine, i) for i in range(args.steps)]
    wait0 = engine.cache_stats().get("map_wait_seconds", 0.0)
    # Two timing events on the stream per call, around the work the call queues: the GPU
    # reaches a call's first event only after the previous call's work is done and the
    # host has queued the event, so the time from one call's last event to the next
    # call's first is the GPU waiting for the host between steps.
    marks: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    t0 = time.perf_counter()
    ends = []
    for _ in range(args.steps):
        if args.mixed:
            work.append(step_work(engine))
        before, after = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        before.record()
        engine.step()
        after.record()
        marks.append((before, after))
        ends.append(time.perf_counter())
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    gaps_ms = [marks[i - 1][1].elapsed_time(marks[i][0]) for i in range(1, len(marks))]
    span_ms = marks[0][1].elapsed_time(marks[-1][1])
    # Host time per engine.step call: spikes (a garbage collection, a page mapped on the
    # critical path) show in the max, a slow loop in the median.
    calls = sorted(np.diff([t0, *ends]) * 1e3)
    map_wait = engine.cache_stats().get("map_wait_seconds", 0.0) - wait0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        t1 = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
        traced_wall = time.perf_counter() - t1
    line = gpu_timeline(prof.events())
    busy_us = line.busy_us
    kernels = sorted(
        (
            {
                "kernel": name[:80],
                "calls_per_step": len(us) / args.steps,
                "us_per_step": sum(us) / args.steps,
            }
            for name, us in line.added_us.items()
        ),
        key=lambda r: -r["us_per_step"],
    )
    # Host time: where the engine loop spends its CPU per step (cProfile, own time).
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        engine.step()
    torch.cuda.synchronize()
    profiler.disable()
    host = io.StringIO()
    pstats.Stats(profiler, stream=host).sort_stats("tottime").print_stats(18)
    step_ms = wall / args.steps * 1e3
    bw, mm = max(ceilings[0], copy_bandwidth()), max(ceilings[1], matmul_rate())
    sustained = sustained_matmul_rate()
    floor, floor_sustained = floor_ms(work, bw, mm), floor_ms(work, bw, sustained)
    row = {
        "model": args.preset,
        "kind": "mixed" if args.mixed else "decode",
        "final_only": args.final_only,
        "batch": args.batch,
        "steps": args.steps,
        "step_ms": step_ms,
        "call_ms_p50": calls[len(calls) // 2],
        "call_ms_max": calls[-1],
        "gpu_busy_ms": busy_us / 1e3 / args.steps,
        "idle_share": sum(gaps_ms) / span_ms,
        # Cross-checks from the traced steps: tracing slows the host (their idle overstates
        # it), and they come later, with longer contexts (busy over the untraced step time
        # understates it).
        "idle_share_traced": 1 - busy_us / 1e6 / traced_wall,
        "idle_share_low": max(0.0, 1 - busy_us / 1e3 / args.steps / step_ms),
        "floor_ms": floor,
        "frac_of_floor": floor / step_ms,
        # The floor at the matmul rate the card sustains under its power limit (common.py).
        "floor_sustained_ms": floor_sustained,
        "frac_of_sustained_floor": floor_sustained / step_ms,
        "map_wait_share": map_wait / wall,
    }
    print(host.getvalue())
    print_table(kernels[:15], ["kernel", "calls_per_step", "us_per_step"])
    print(
        f"copy bandwidth {bw / 1e9:.0f} GB/s, bf16 matmul {mm / 1e12:.0f} TFLOP/s "
        f"({sustained / 1e12:.0f} sustained)"
    )
    print_table([row], list(row))
    write_json(
        args.json,
        {
            "info": run_info(),
            "workload": vars(args),
            "copy_GB_per_s": bw / 1e9,
            "matmul_TFLOP_per_s": mm / 1e12,
            "matmul_sustained_TFLOP_per_s": sustained / 1e12,
            "results": [row],
            "kernels": kernels[:30],
        },
    )


if __name__ == "__main__":
    main()
