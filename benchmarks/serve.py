"""Serving benchmark: open-loop load against an OpenAI-compatible server.

Requests arrive as a Poisson process (``--burstiness 1``) or a gamma process (other
values; < 1 is burstier) at ``--request-rate`` per second (``inf``: all at once). Prompts are
random tokens or slices of a text corpus (``.gz`` ok) with an exact token length; outputs
have a fixed length or one sampled uniformly around it (``--output-len-range``), and EOS is
ignored so every request generates exactly what it asked. Reports request throughput,
output tokens/s, TTFT, TPOT, ITL and end-to-end latency (mean, median, p99), writes JSON
and optionally plots latency CDFs (needs matplotlib).

    python benchmarks/serve.py --start-server --num-prompts 64 --request-rate 8
    python benchmarks/serve.py --url http://127.0.0.1:8000 --dataset corpus.txt.gz
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import re
import shlex
import signal
import string
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import httpx
import numpy as np


@dataclass
class RequestSpec:
    prompt_ids: list[int]
    output_len: int


@dataclass
class RequestResult:
    ok: bool
    prompt_len: int
    output_len: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str | None = None


# -- workload -------------------------------------------------------------------------------
def read_corpus(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def _tokenize(http: httpx.Client, model: str, text: str) -> list[int]:
    resp = http.post(
        "/tokenize", json={"model": model, "prompt": text, "add_special_tokens": False}
    )
    resp.raise_for_status()
    return resp.json()["tokens"]


def build_workload(
    args: argparse.Namespace, http: httpx.Client, model: str, max_len: int
) -> list[RequestSpec]:
    rng = random.Random(args.seed)
    if args.input_len + args.output_len * (1 + args.output_len_range) > max_len:
        raise SystemExit(f"input + output length exceed the server's context ({max_len})")
    corpus = read_corpus(args.dataset) if args.dataset != "random" else None
    alphabet = sorted(set(_tokenize(http, model, string.ascii_letters + string.digits + " .,")))
    specs = []
    for _ in range(args.num_prompts):
        if corpus is None:
            ids = [rng.choice(alphabet) for _ in range(args.input_len)]
        else:
            # Enough characters for the token count in any tokenizer we meet (>= 1 char/token).
            span = args.input_len * 8
            start = rng.randrange(max(1, len(corpus) - span))
            ids = _tokenize(http, model, corpus[start : start + span])[: args.input_len]
        lo = max(1, int(args.output_len * (1 - args.output_len_range)))
        hi = max(lo, int(args.output_len * (1 + args.output_len_range)))
        specs.append(RequestSpec(ids, rng.randint(lo, hi)))
    return specs


def arrival_gaps(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    if rate == float("inf"):
        return [0.0] * n
    rng = np.random.default_rng(seed)
    # Gamma with shape k and mean 1/rate; k = 1 is the exponential (Poisson arrivals).
    return list(rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n))


# -- one request ----------------------------------------------------------------------------
async def run_one(
    client: httpx.AsyncClient, model: str, spec: RequestSpec, api_key: str | None
) -> RequestResult:
    body = {
        "model": model,
        "prompt": spec.prompt_ids,
        "max_tokens": spec.output_len,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        # A chunk (with the usage so far) for every step that made tokens, text or not: a
        # tokenizer smaller than the model's vocabulary (the presets) makes chunks without text.
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = RequestResult(ok=False, prompt_len=len(spec.prompt_ids))
    start = time.perf_counter()
    last = None
    try:
        async with client.stream("POST", "/v1/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                result.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return result
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    result.error = event["error"]["message"]
                    return result
                used = (event.get("usage") or {}).get("completion_tokens", 0)
                if used > result.output_len:  # this chunk brings new tokens
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    result.output_len = used
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.latency = time.perf_counter() - start
    result.ok = True
    return result


async def run_load(
    url: str,
    model: str,
    specs: list[RequestSpec],
    gaps: list[float],
    max_concurrency: int | None,
    api_key: str | None,
) -> tuple[list[RequestResult], float]:
    limits = httpx.Limits(max_connections=max_concurrency or 10_000, max_keepalive_connections=0)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    async with httpx.AsyncClient(
        base_url=url, timeout=httpx.Timeout(3600.0), limits=limits
    ) as client:

        async def limited(spec: RequestSpec) -> RequestResult:
            if gate is None:
                return await run_one(client, model, spec, api_key)
            async with gate:
                return await run_one(client, model, spec, api_key)

        start = time.perf_counter()
        tasks = []
        for spec, gap in zip(specs, gaps, strict=False):  # gaps may outnumber specs
            if gap > 0:
                await asyncio.sleep(gap)  # the arrival process itself, not synchronisation
            tasks.append(asyncio.create_task(limited(spec)))
        results = await asyncio.gather(*tasks)
        return list(results), time.perf_counter() - start


# -- report ---------------------------------------------------------------------------------
def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean_ms": float("nan"), "median_ms": float("nan"), "p99_ms": float("nan")}
    a = np.asarray(values) * 1000
    return {
        "mean_ms": float(a.mean()),
        "median_ms": float(np.median(a)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def summarize(results: list[RequestResult], duration: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_len for r in ok)
    in_tokens = sum(r.prompt_len for r in ok)
    tpot = [(r.latency - r.ttft) / (r.output_len - 1) for r in ok if r.output_len > 1]
    errors = sorted({r.error for r in results if r.error})
    return {
        "duration_s": duration,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": errors[:5],
        "request_throughput_rps": len(ok) / duration,
        "input_tokens_per_s": in_tokens / duration,
        "output_tokens_per_s": out_tokens / duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "ttft": _stats([r.ttft for r in ok]),
        "tpot": _stats(tpot),
        "itl": _stats([x for r in ok for x in r.itl]),
        "e2e": _stats([r.latency for r in ok]),
    }


def print_report(s: dict[str, Any]) -> None:
    print(f"{'completed / failed':<28}{s['completed']} / {s['failed']}")
    print(f"{'duration (s)':<28}{s['duration_s']:.2f}")
    print(f"{'request throughput (req/s)':<28}{s['request_throughput_rps']:.2f}")
    print(f"{'input tokens/s':<28}{s['input_tokens_per_s']:.1f}")
    print(f"{'output tokens/s':<28}{s['output_tokens_per_s']:.1f}")
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "E2E")):
        m = s[key]
        print(
            f"{label + ' (ms) mean/median/p99':<28}{m['mean_ms']:.1f} / {m['median_ms']:.1f} / "
            f"{m['p99_ms']:.1f}"
        )
    for err in s["errors"]:
        print(f"error: {err}")


def plot_cdfs(results: list[RequestResult], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib); skipped", file=sys.stderr)
        return
    ok = [r for r in results if r.ok]
    series = {
        "TTFT": [r.ttft for r in ok],
        "ITL": [x for r in ok for x in r.itl],
        "E2E": [r.latency for r in ok],
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, values) in zip(axes, series.items(), strict=True):
        if values:
            xs = np.sort(np.asarray(values) * 1000)
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs))
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests" if name != "ITL" else "fraction of tokens")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# -- server ---------------------------------------------------------------------------------
class ServerStartError(RuntimeError):
    """The server exited, or did not print its serving line in time."""


@dataclass
class ServerProcess:
    """A started ``python -m sarathi serve``. A thread drains its output into a sink for the
    server's whole life, so it never blocks on a full pipe; ``tail`` keeps the last lines."""

    proc: subprocess.Popen
    url: str
    startup_line: str
    tail: deque[str]
    reader: threading.Thread

    def stop(self, grace: float = 60.0) -> None:
        """Stop the server, then let the reader finish writing its last output."""
        stop_server(self.proc, grace)
        self.reader.join(10)


def launch_server(
    server_args: list[str],
    timeout: float | None = None,
    sink: TextIO | None = None,
    log_level: str = "warning",
) -> ServerProcess:
    """Start ``python -m sarathi serve --port 0 SERVER_ARGS`` and wait for its serving line.

    Raises ``ServerStartError`` (after stopping the process) if the server exits first or
    ``timeout`` seconds pass; the message carries the last lines it printed.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable,
        "-m",
        "sarathi",
        "serve",
        "--port",
        "0",
        "--log-level",
        log_level,
        *server_args,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    out = sink if sink is not None else sys.stderr
    tail: deque[str] = deque(maxlen=40)
    found: list[tuple[str, str]] = []
    done = threading.Event()  # the serving line was seen, or the output ended

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            tail.append(line.rstrip("\n"))
            match = None if found else re.search(r" serving .* on (http://\S+)", line)
            if match:
                found.append((match.group(1), line.strip()))
                done.set()
        done.set()

    reader = threading.Thread(target=drain, name="server-output", daemon=True)
    reader.start()
    try:
        ended = done.wait(timeout)
    except BaseException:  # Ctrl-C while waiting: never leave the server behind
        stop_server(proc)
        raise
    if found:
        url, line = found[0]
        return ServerProcess(proc, url, line, tail, reader)
    stop_server(proc)
    reader.join(10)
    reason = (
        f"it exited with status {proc.returncode}"
        if ended
        else f"it printed no serving line within {timeout:.0f} s (stopped)"
    )
    last = "\n".join(list(tail)[-15:])
    raise ServerStartError(
        f"{reason}; its last output:\n{last}" if last else f"{reason}, with no output"
    )


def stop_server(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM (the server drains and exits), then SIGKILL if it is still there after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_server(extra: str) -> tuple[subprocess.Popen, str]:
    try:
        server = launch_server(shlex.split(extra))
    except ServerStartError as e:
        raise SystemExit(f"the server did not start: {e}") from None
    return server.proc, server.url


def model_card(http: httpx.Client, url: str) -> dict[str, Any]:
    """The served model's /v1/models entry; a server that is not there, or refuses the call
    (a missing --api-key), is one line naming the URL rather than an httpx traceback."""
    try:
        return http.get("/v1/models").raise_for_status().json()["data"][0]
    except httpx.HTTPStatusError as e:
        raise SystemExit(
            f"the server at {url} answered /v1/models with {e.response.status_code}"
            + (" (pass --api-key)" if e.response.status_code == 401 else "")
        ) from None
    except httpx.TransportError as e:
        raise SystemExit(
            f"cannot reach a server at {url} ({e}); start one (python -m sarathi serve), "
            "or pass --start-server or --url"
        ) from None


def _base_url(text: str) -> str:
    """--url, checked as the flag is read: httpx refused a malformed one with a traceback."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"{text!r}: expected http(s)://HOST:PORT")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--url", type=_base_url, default="http://127.0.0.1:8000", help="Server base URL."
    )
    p.add_argument(
        "--start-server",
        action="store_true",
        help="Start `python -m sarathi serve` (demo model unless --server-args "
        "says otherwise) and stop it afterwards.",
    )
    p.add_argument("--server-args", default="", help="Extra flags for the started server.")
    p.add_argument("--model", default=None, help="Model name (default: the server's first).")
    p.add_argument("--api-key", default=os.environ.get("SARATHI_API_KEY"))
    p.add_argument(
        "--dataset",
        default="random",
        help="'random' (random tokens) or a text corpus file (.gz ok).",
    )
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=64, help="Prompt length in tokens.")
    p.add_argument("--output-len", type=int, default=64, help="Output length in tokens.")
    p.add_argument(
        "--output-len-range",
        type=float,
        default=0.0,
        help="Sample output lengths uniformly in len*(1 +- range) (default: 0).",
    )
    p.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="Requests per second (default: inf, all at once).",
    )
    p.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="Gamma shape of the arrivals: 1 is Poisson, < 1 burstier.",
    )
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="Write the results as JSON here.")
    p.add_argument("--plot", default=None, help="Write latency CDFs (PNG) here.")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.burstiness <= 0 or args.request_rate <= 0:
        raise SystemExit("--burstiness and --request-rate must be positive")
    proc = None
    url = args.url
    if args.start_server:
        proc, url = start_server(args.server_args)
    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            card = model_card(http, url)
            model = args.model or card["id"]
            specs = build_workload(args, http, model, card.get("max_model_len") or 10**9)
            server_info = {
                "model": model,
                "max_model_len": card.get("max_model_len"),
                "description": card.get("description"),
            }
        gaps = arrival_gaps(len(specs), args.request_rate, args.burstiness, args.seed)
        results, duration = asyncio.run(
            run_load(url, model, specs, gaps, args.max_concurrency, args.api_key)
        )
    finally:
        if proc is not None:
            stop_server(proc)
    summary = summarize(results, duration)
    print_report(summary)
    if args.out:
        config = {k: v for k, v in vars(args).items() if k not in ("api_key",)}
        config["request_rate"] = str(config["request_rate"])
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "config": config,
                    "server": server_info,
                    "summary": summary,
                    "requests": [asdict(r) | {"itl": None} for r in results],
                },
                f,
                indent=2,
            )
        print(f"wrote {args.out}")
    if args.plot:
        plot_cdfs(results, args.plot)
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
