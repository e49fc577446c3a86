"""What it costs to get one step's inputs to the tensor-parallel ranks, on the host.

Two steps: 256 decodes, and a mixed step (one 1024-token prompt chunk and 64 decodes).

- codec: ``encode_step`` + ``decode_step`` against ``pickle.dumps`` + ``pickle.loads`` of
  the same ``StepInput`` (median microseconds over many calls, one process);
- transfer: a driver process sends the step to a rank process, which decodes it and answers
  with a one-byte ack down a pipe (as rank 0 answers a step); the median round trip of the
  old path (pickle, one ``multiprocessing`` queue per rank) against the new one (codec, the
  shared-memory ring). The ack costs the same in both.

    python benchmarks/step_message.py [--readers 1] [--steps 2000] [--json OUT]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from common import print_table, run_info, write_json

from sarathi.core.scheduler_output import ScheduledChunk, StepInput
from sarathi.executor.shm_ring import RingReader, RingWriter
from sarathi.executor.step_codec import decode_step, encode_step


def decode_step_input(num_decodes: int, rng: random.Random) -> StepInput:
    ids = rng.sample(range(10_000), num_decodes)
    return StepInput(
        decode_seq_ids=ids,
        decode_positions=[rng.randrange(100, 4096) for _ in ids],
        decode_tokens=[rng.randrange(128_000) for _ in ids],
    )


def mixed_step_input(chunk_tokens: int, num_decodes: int, rng: random.Random) -> StepInput:
    step = decode_step_input(num_decodes, rng)
    step.chunks = [
        ScheduledChunk(
            seq_id=20_000,
            start=2048,
            token_ids=[rng.randrange(128_000) for _ in range(chunk_tokens)],
            sample=False,
        )
    ]
    return step


def median_us(fn: Callable[[], object], reps: int = 2000) -> float:
    for _ in range(reps // 10):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


# -- the rank side of the transfer benchmark ---------------------------------------------


def _queue_rank(commands: Any, ack: Any) -> None:
    while True:
        kind, _number, payload = commands.get()
        if kind == "stop":
            return
        pickle.loads(payload)
        ack.send_bytes(b"k")


def _ring_rank(handle: Any, index: int, ack: Any) -> None:
    reader = RingReader(handle, index)
    while True:
        message = reader.read(lambda: True)
        if message is None or message.kind == 1:
            reader.close()
            return
        decode_step(message.payload)
        ack.send_bytes(b"k")


def transfer_us(step: StepInput, path: str, readers: int, steps: int) -> tuple[float, float]:
    """Median and 90th-percentile round trip (driver send -> rank 0 decoded -> ack back)."""
    ctx = mp.get_context("spawn")
    acks = [ctx.Pipe(duplex=False) for _ in range(readers)]
    ring = RingWriter(ctx, readers) if path == "ring" else None
    queues = [ctx.Queue() for _ in range(readers)] if ring is None else []
    procs = [
        ctx.Process(
            target=_queue_rank if ring is None else _ring_rank,
            args=(queues[i], acks[i][1]) if ring is None else (ring.handle, i, acks[i][1]),
        )
        for i in range(readers)
    ]
    for p in procs:
        p.start()

    def send(kind: str, number: int) -> None:
        if ring is None:
            payload = pickle.dumps(step) if kind == "step" else None
            for q in queues:
                q.put((kind, number, payload))
        else:
            ring.write(
                0 if kind == "step" else 1,
                number,
                encode_step(step) if kind == "step" else b"",
                time.monotonic() + 30,
                lambda: None,
            )

    times = []
    for n in range(steps + steps // 10):
        t = time.perf_counter()
        send("step", n)
        for recv, _ in acks:
            recv.recv_bytes()
        times.append(time.perf_counter() - t)
    send("stop", 0)
    for p in procs:
        p.join(30)
    if ring is not None:
        ring.close()
    timed = sorted(times[steps // 10 :])
    return statistics.median(timed) * 1e6, timed[int(0.9 * len(timed))] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readers", type=int, default=1, help="Rank processes (default 1).")
    ap.add_argument("--steps", type=int, default=2000, help="Timed round trips (default 2000).")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    args = ap.parse_args()

    rng = random.Random(0)
    steps = {
        "decode256": decode_step_input(256, rng),
        "mixed_1024+64": mixed_step_input(1024, 64, rng),
    }
    rows = []
    for name, step in steps.items():
        assert decode_step(encode_step(step)) == step
        message = encode_step(step)
        pickled = pickle.dumps(step)
        queue_med, queue_p90 = transfer_us(step, "queue", args.readers, args.steps)
        ring_med, ring_p90 = transfer_us(step, "ring", args.readers, args.steps)
        rows.append(
            {
                "step": name,
                "codec_bytes": len(message),
                "pickle_bytes": len(pickled),
                "encode_us": median_us(lambda s=step: encode_step(s)),
                "decode_us": median_us(lambda m=message: decode_step(m)),
                "pickle_dumps_us": median_us(lambda s=step: pickle.dumps(s)),
                "pickle_loads_us": median_us(lambda p=pickled: pickle.loads(p)),
                "queue_round_trip_us": queue_med,
                "queue_round_trip_p90_us": queue_p90,
                "ring_round_trip_us": ring_med,
                "ring_round_trip_p90_us": ring_p90,
            }
        )
    for r in rows:
        r["codec_us"] = r["encode_us"] + r["decode_us"]
        r["pickle_us"] = r["pickle_dumps_us"] + r["pickle_loads_us"]
    print(f"readers: {args.readers}, round trips timed: {args.steps}")
    print_table(
        rows,
        [
            "step",
            "codec_bytes",
            "pickle_bytes",
            "encode_us",
            "decode_us",
            "codec_us",
            "pickle_us",
            "queue_round_trip_us",
            "ring_round_trip_us",
            "queue_round_trip_p90_us",
            "ring_round_trip_p90_us",
        ],
    )
    write_json(args.json, {"info": {**run_info(), "readers": args.readers}, "results": rows})


if __name__ == "__main__":
    main()
