"""CPU time the engine spends per step outside the model: scheduling and input preparation.

With 256 running decodes (default), time ``Scheduler.schedule()`` and
``ModelRunner.prepare()`` (flat batch, slots, metadata tensors) per step, and separately the
output processing (token append, incremental detokenization, stop checks). The model is not
run in the timed steps; sampled tokens are stand-ins. Target: schedule + prepare < 1 ms.

    python benchmarks/engine_overhead.py [--num-seqs 256] [--steps 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import print_table, run_info, write_json

from sarathi import SamplingParams
from sarathi.config import EngineConfig
from sarathi.core.scheduler_output import SampledToken, StepResult
from sarathi.engine.llm_engine import LLMEngine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-seqs", type=int, default=256, help="Running sequences (default 256).")
    ap.add_argument("--prompt-len", type=int, default=128, help="Prompt tokens (default 128).")
    ap.add_argument("--steps", type=int, default=200, help="Timed steps (default 200).")
    ap.add_argument("--model", default="demo", help="Model folder (default: the demo model).")
    ap.add_argument("--final-only", action="store_true",
                    help="Requests as offline generate adds them: no per-step output snapshots.")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()

    config = EngineConfig.from_kwargs(model=args.model, max_num_seqs=args.num_seqs,
                                      chunk_size=max(512, args.num_seqs),
                                      max_model_len=args.prompt_len + 4 * args.steps + 1024,
                                      device="cpu")
    engine = LLMEngine(config)
    params = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)
    for i in range(args.num_seqs):
        engine.add_request([10 + (i + j) % 200 for j in range(args.prompt_len)], params,
                           final_only=args.final_only)
    while engine.scheduler.waiting or any(s.remaining > 1 for s in engine.scheduler.running):
        engine.step()  # real prefills until every sequence is decoding
    runner = engine.executor.worker.runner
    sched_t, prep_t, proc_t = [], [], []
    for _ in range(args.steps):
        t0 = time.thread_time()
        plan = engine.scheduler.schedule()
        t1 = time.thread_time()
        batch = runner.prepare(plan.input)
        t2 = time.thread_time()
        result = StepResult([SampledToken(i, 42) for i in batch.sample_ids])
        engine.process(engine.commit(plan), result)
        t3 = time.thread_time()
        sched_t.append(t1 - t0)
        prep_t.append(t2 - t1)
        proc_t.append(t3 - t2)
        assert len(plan.scheduled) == args.num_seqs
    us = lambda xs: statistics.median(xs) * 1e6  # noqa: E731
    row = {"running": args.num_seqs, "final_only": args.final_only, "schedule_us": us(sched_t), "prepare_us": us(prep_t),
           "schedule+prepare_us": us([a + b for a, b in zip(sched_t, prep_t)]),
           "process_us": us(proc_t), "target_us": 1000.0}
    print_table([row], list(row))
    write_json(args.json, {"info": run_info(), "results": [row]})


if __name__ == "__main__":
    main()
