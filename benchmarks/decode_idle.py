"""GPU idle time between decode steps: kernel time over wall time of engine steps.

Starts ``--batch`` requests on a random-weight model, prefills them, then profiles
``--steps`` pure-decode engine steps unprofiled for the wall time, then as many under a
CUDA-only trace for the busy time: the time in which some kernel or copy ran (kernels
launched with programmatic dependent launch overlap their predecessors, so durations are
not summed). Idle share = 1 - busy / wall.

    python benchmarks/decode_idle.py --preset llama3-8b --batch 64
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import gpu_timeline, print_table, run_info, write_json

from sarathi import LLM, SamplingParams
from sarathi.model_executor.presets import write_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama3-8b", help="Model shape (random weights).")
    ap.add_argument("--batch", type=int, default=64, help="Concurrent sequences (64).")
    ap.add_argument("--prompt-len", type=int, default=512, help="Prompt tokens (512).")
    ap.add_argument("--steps", type=int, default=30, help="Profiled decode steps (30).")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    ap.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="Extra engine option (repeatable).")
    args = ap.parse_args()
    extra: dict = {"load_format": "dummy", "max_model_len": 4096}
    for kv in args.engine_arg:
        key, _, value = kv.partition("=")
        extra[key] = int(value) if value.isdigit() else value
    llm = LLM(write_preset(args.preset, tempfile.mkdtemp(prefix="idle-")), **extra)
    engine = llm.engine
    params = SamplingParams(temperature=0.6, max_tokens=2048, ignore_eos=True)
    for i in range(args.batch):
        engine.add_request([10 + (i * 7 + j) % 1000 for j in range(args.prompt_len)], params,
                           request_id=f"idle-{i}")
    # Prefill everything, then a few decode steps to warm caches and compile kernels.
    for _ in range(args.batch * args.prompt_len // 256 + 20):
        engine.step()
    torch.cuda.synchronize()
    # Wall time unprofiled (the CPU profiler slows the host down); GPU busy time from a
    # CUDA-only trace of the next steps; then a CPU trace for the host-side table.
    wait0 = engine.cache_stats().get("map_wait_seconds", 0.0)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    map_wait = engine.cache_stats().get("map_wait_seconds", 0.0) - wait0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
    busy_us = gpu_timeline(prof.events()).busy_us
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as host_prof:
        for _ in range(min(args.steps, 10)):
            engine.step()
        torch.cuda.synchronize()
    row = {"model": args.preset, "batch": args.batch, "steps": args.steps,
           "step_ms": wall / args.steps * 1e3, "gpu_busy_ms": busy_us / 1e3 / args.steps,
           "idle_share": 1 - busy_us / 1e6 / wall, "map_wait_share": map_wait / wall}
    print(host_prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print_table([row], list(row))
    write_json(args.json, {"info": run_info(), "workload": vars(args), "results": [row]})


if __name__ == "__main__":
    main()
