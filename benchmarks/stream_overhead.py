"""What streaming costs the server's event loop, per chunk (Linux; the demo model or a GPU preset).

The server runs the engine on its own thread and the HTTP side (uvicorn, FastAPI, the
``_stream`` generators) on the event loop, in one process: what the loop spends per streamed
chunk is taken from the GIL the engine thread needs between its GPU steps. This starts
``python -m sarathi serve`` (the demo model by default), runs ``--streams`` concurrent
completions of ``--tokens`` tokens each (ignore_eos, temperature 1, so text flows every
step), once streamed and once not, and reads the CPU time of the server's main thread (the
event loop) from ``/proc``. The difference over the streamed chunks is the loop's cost per
chunk; times the number of streams, what one engine step's outputs cost the loop.

    python benchmarks/stream_overhead.py --streams 64 256 --json stream_overhead.json
    python benchmarks/stream_overhead.py --preset qwen3-0.6b   (GPU: a real shape, random weights)

The wall times show the same from the other side: with a GPU doing the steps, streamed
requests that take longer than the same requests unstreamed lost GPU time to the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time

import httpx
from common import add_server_arg, print_table, run_info, start_demo_server, write_json


def preset_folder(name: str) -> str:
    """A preset's model folder whose tokenizer has a word for every id of the model's
    vocabulary: the presets bring the demo tokenizer (593 ids), so most random draws would
    decode to nothing and stream no chunk, where a real model's tokens make text each step."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    from sarathi.model_executor.presets import write_preset

    folder = write_preset(name, tempfile.mkdtemp(prefix=f"preset-{name}-"))
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        vocab_size = json.load(f)["vocab_size"]
    eos = "<|endoftext|>"  # the demo tokenizer_config's end of text
    vocab = {eos: 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=eos))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    return folder


def loop_cpu_s(pid: int) -> float:
    """CPU seconds of the server's main thread, where uvicorn runs the event loop."""
    with open(f"/proc/{pid}/task/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def run(url: str, streams: int, tokens: int, stream: bool) -> tuple[float, int]:
    """(seconds, streamed chunks) of ``streams`` concurrent completions."""
    chunks = 0
    body = {
        "prompt": "hello world " * 4,
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 1.0,
        "stream": stream,
    }

    async def one(c: httpx.AsyncClient) -> None:
        nonlocal chunks
        if not stream:
            r = await c.post("/v1/completions", json=body)
            r.raise_for_status()
            return
        async with c.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                chunks += line.startswith("data: {")

    limits = httpx.Limits(max_connections=streams + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*[one(c) for _ in range(streams)])
        return time.perf_counter() - t0, chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[64, 256], help="Concurrency.")
    ap.add_argument("--tokens", type=int, default=64, help="Tokens per completion (64).")
    ap.add_argument(
        "--preset",
        default=None,
        help="Serve this model shape with random weights (sarathi presets) instead of the demo.",
    )
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    add_server_arg(ap)
    args = ap.parse_args()
    flags = ["--max-num-seqs", str(max(args.streams)), "--max-model-len", "512"]
    folder = None
    if args.preset is not None:
        folder = preset_folder(args.preset)
        flags += ["--model", folder, "--load-format", "dummy"]
    proc, url = start_demo_server([*flags, *args.server_arg])
    rows = []
    try:
        asyncio.run(run(url, 8, 8, True))  # warm-up
        for n in args.streams:
            cpu = {}
            for stream in (False, True):
                before = loop_cpu_s(proc.pid)
                seconds, chunks = asyncio.run(run(url, n, args.tokens, stream))
                cpu[stream] = (loop_cpu_s(proc.pid) - before, seconds, chunks)
            (plain_cpu, plain_s, _), (stream_cpu, stream_s, chunks) = cpu[False], cpu[True]
            per_chunk_us = (stream_cpu - plain_cpu) / max(1, chunks) * 1e6
            rows.append(
                {
                    "streams": n,
                    "tokens": args.tokens,
                    "chunks": chunks,
                    "loop_cpu_s_streamed": stream_cpu,
                    "loop_cpu_s_plain": plain_cpu,
                    "wall_s_streamed": stream_s,
                    "wall_s_plain": plain_s,
                    "loop_us_per_chunk": per_chunk_us,
                    "loop_ms_per_step": per_chunk_us * n / 1e3,
                }
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    print_table(rows, list(rows[0]))
    write_json(args.json, {"info": run_info(), "workload": vars(args), "results": rows})


if __name__ == "__main__":
    main()
