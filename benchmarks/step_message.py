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
import os
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


class _Path:
    """The driver's end of one way to reach the ranks, with its rank processes running."""

    def __init__(self, kind: str, readers: int) -> None:
        ctx = mp.get_context("spawn")
        self.acks = [ctx.Pipe(duplex=False) for _ in range(readers)]
        self.ring = RingWriter(ctx, readers) if kind == "ring" else None
        self.queues = [ctx.Queue() for _ in range(readers)] if self.ring is None else []
        self.procs = [
            ctx.Process(
                target=_queue_rank if self.ring is None else _ring_rank,
                args=(self.queues[i], self.acks[i][1])
                if self.ring is None
                else (self.ring.handle, i, self.acks[i][1]),
            )
            for i in range(readers)
        ]
        for p in self.procs:
            p.start()

    def send(self, step: StepInput | None, number: int) -> None:
        """Send ``step`` (None: stop) as the executor does: pickled to every queue, or
        encoded once into the ring."""
        if self.ring is None:
            kind, payload = ("step", pickle.dumps(step)) if step is not None else ("stop", None)
            for q in self.queues:
                q.put((kind, number, payload))
        else:
            message = encode_step(step) if step is not None else b""
            kind_id = 0 if step is not None else 1
            self.ring.write(kind_id, number, message, time.monotonic() + 30, lambda: None)

    def round_trip(self, step: StepInput, number: int) -> float:
        t = time.perf_counter()
        self.send(step, number)
        for recv, _ in self.acks:
            recv.recv_bytes()
        return time.perf_counter() - t

    def stop(self) -> None:
        self.send(None, 0)
        for p in self.procs:
            p.join(30)
        if self.ring is not None:
            self.ring.close()


def transfer_us(step: StepInput, readers: int, steps: int) -> dict[str, float]:
    """Median and 90th-percentile round trip (driver sends, rank decodes, ack back) of each
    path; the two alternate in blocks so that drift in the machine's load hits both."""
    paths = {kind: _Path(kind, readers) for kind in ("queue", "ring")}
    times: dict[str, list[float]] = {kind: [] for kind in paths}
    block = 100
    for path in paths.values():  # warm-up
        for n in range(block):
            path.round_trip(step, n)
    for start in range(0, steps, block):
        for kind, path in paths.items():
            times[kind] += [path.round_trip(step, start + n) for n in range(block)]
    for path in paths.values():
        path.stop()
    out = {}
    for kind, ts in times.items():
        ts.sort()
        out[f"{kind}_round_trip_us"] = statistics.median(ts) * 1e6
        out[f"{kind}_round_trip_p90_us"] = ts[int(0.9 * len(ts))] * 1e6
    return out


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
        rows.append(
            {
                "step": name,
                "codec_bytes": len(message),
                "pickle_bytes": len(pickled),
                "encode_us": median_us(lambda s=step: encode_step(s)),
                "decode_us": median_us(lambda m=message: decode_step(m)),
                "pickle_dumps_us": median_us(lambda s=step: pickle.dumps(s)),
                "pickle_loads_us": median_us(lambda p=pickled: pickle.loads(p)),
                **transfer_us(step, args.readers, args.steps),
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
    info = run_info()
    if os.environ.get("PYTHONPATH"):  # which tree ran matters: say so, as the shell did
        info["command"] = f"PYTHONPATH={os.environ['PYTHONPATH']} {info['command']}"
    write_json(args.json, {"info": {**info, "readers": args.readers}, "results": rows})


if __name__ == "__main__":
    main()
