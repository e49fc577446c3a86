"""Host time the engine spends per step outside the model, with 256 running decodes.

Times, per step: ``Scheduler.schedule()``; the engine's accounting of the plan; the model
runner's ``prepare`` (bookkeeping, slots and KV blocks, the step's arrays and their copy to
the device); and output processing (tokens, stop checks, text where it is needed, outputs).
The model and sampler do not run: the sampled tokens are stand-ins. With overlapped
scheduling all of this runs while the GPU computes the previous step, so it must stay under
a step's GPU time (Qwen3-0.6B at batch 256: a few ms).

    python benchmarks/engine_overhead.py [--num-seqs 256] [--steps 200] [--final-only]
        [--delta] [--serving-gc] [--logprobs K]

With ``--logprobs K`` every sequence asks for K alternatives per token, and the garbage
collector's pauses over the timed steps are reported too (longest and total): they stop
every thread of the process, the server's event loop included.

After the timed steps one more step finishes every request at once (their max_tokens is
reached): its output processing, wall time with any collection in it, is ``finish_step_ms``
(where a finished output that carries every position builds them all).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import time

from common import add_engine_arg, engine_args, print_table, run_info, write_json

from sarathi import SamplingParams
from sarathi.config import EngineConfig
from sarathi.core.scheduler_output import StepResult, TokenLogprobs
from sarathi.engine.gc_policy import tune_for_serving
from sarathi.engine.llm_engine import LLMEngine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-seqs", type=int, default=256, help="Running sequences (default 256).")
    ap.add_argument("--prompt-len", type=int, default=128, help="Prompt tokens (default 128).")
    ap.add_argument("--steps", type=int, default=200, help="Timed steps (default 200).")
    ap.add_argument("--model", default="demo", help="Model folder (default: the demo model).")
    ap.add_argument(
        "--final-only",
        action="store_true",
        help="Requests as offline generate adds them: no per-step output snapshots.",
    )
    ap.add_argument(
        "--delta",
        action="store_true",
        help="Streamed as the server asks: snapshots carry only the new tokens (delta).",
    )
    ap.add_argument(
        "--serving-gc",
        action="store_true",
        help="Tune garbage collection as the server does (sarathi.engine.gc_policy).",
    )
    ap.add_argument(
        "--logprobs",
        type=int,
        default=None,
        help="Alternatives per token each sequence asks for (0-20; default: no logprobs).",
    )
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    add_engine_arg(ap)
    args = ap.parse_args()
    extra = engine_args(args.engine_arg)

    # Long runs (--steps 2000) outgrow the demo model's 2,048 positions; its weights are
    # random, so the positions past them cost what trained ones would.
    os.environ.setdefault("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", "1")
    config = EngineConfig.from_kwargs(
        model=args.model,
        max_num_seqs=args.num_seqs,
        chunk_size=max(512, args.num_seqs),
        max_model_len=args.prompt_len + 4 * args.steps + 1024,
        device="cpu",
        **extra,
    )
    engine = LLMEngine(config)
    params = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True, logprobs=args.logprobs)
    if args.serving_gc:
        tune_for_serving()
    for i in range(args.num_seqs):
        engine.add_request(
            [10 + (i + j) % 200 for j in range(args.prompt_len)],
            copy.copy(params),  # its own: its max_tokens is set for the last step
            final_only=args.final_only,
            delta=args.delta,
        )
    while engine.scheduler.waiting or any(s.remaining > 1 for s in engine.scheduler.running):
        engine.step()  # real prefills until every sequence is decoding
    runner = engine.executor.worker.runner
    vocab = engine.setup.shape.vocab_size
    times: dict[str, list[float]] = {"schedule": [], "account": [], "prepare": [], "process": []}
    pauses: list[float] = []
    started = [0.0]

    def stand_ins(n: int, step: int) -> tuple[list[int], list[TokenLogprobs] | None]:
        # Varied tokens of the vocabulary (the demo model has 2,048), as a model writes.
        tokens = [(step * 7919 + i * 104729) % vocab for i in range(n)]
        if args.logprobs is None:
            return tokens, None
        k = args.logprobs
        return tokens, [
            TokenLogprobs(-1.0, 2, [((t + j) % vocab, -0.5 - j, j + 1) for j in range(k)])
            for t in tokens
        ]

    def time_collection(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(time_collection)
    for step in range(args.steps):
        t0 = time.thread_time()
        plan = engine.scheduler.schedule()
        t1 = time.thread_time()
        sampled, indices = engine.account(plan)
        t2 = time.thread_time()
        runner.prepare(plan.input)
        t3 = time.thread_time()
        tokens, logprobs = stand_ins(len(sampled), step)
        engine.output_processor.process(sampled, indices, StepResult(tokens, logprobs))
        t4 = time.thread_time()
        for key, a, b in (
            ("schedule", t0, t1),
            ("account", t1, t2),
            ("prepare", t2, t3),
            ("process", t3, t4),
        ):
            times[key].append(b - a)
        assert len(plan.decodes) == args.num_seqs
    # A max_tokens of one more than each has ends them all next step.
    for req in engine.requests.values():
        req.params.max_tokens = req.seqs[0].num_output + 1
    plan = engine.scheduler.schedule()
    sampled, indices = engine.account(plan)
    runner.prepare(plan.input)
    tokens, logprobs = stand_ins(len(sampled), args.steps)
    t0 = time.perf_counter()
    done = engine.output_processor.process(sampled, indices, StepResult(tokens, logprobs))
    finish_s = time.perf_counter() - t0
    assert sum(o.finished for o in done.outputs) == args.num_seqs
    gc.callbacks.remove(time_collection)
    row: dict = {
        "running": args.num_seqs,
        "final_only": args.final_only,
        "delta": args.delta,
        "serving_gc": args.serving_gc,
        "logprobs": args.logprobs,
        "steps": args.steps,
    }
    for key, xs in times.items():
        row[f"{key}_us"] = statistics.median(xs) * 1e6
    # Output processing grows with the outputs' length: the last 100 steps apart.
    row["process_last100_us"] = statistics.mean(times["process"][-100:]) * 1e6
    row["total_us"] = statistics.median([sum(x) for x in zip(*times.values(), strict=True)]) * 1e6
    row["finish_step_ms"] = finish_s * 1e3
    row["gc_pause_max_ms"] = max(pauses, default=0.0) * 1e3
    row["gc_pause_total_ms"] = sum(pauses) * 1e3
    print_table([row], list(row))
    write_json(args.json, {"info": run_info(), "results": [row]})


if __name__ == "__main__":
    main()
