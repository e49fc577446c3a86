"""A mixed soak of `python -m sarathi serve`: requests/s, latency, RSS over time, 5xx, and the
metrics at rest afterwards (loopback only; the demo model on the CPU by default).

``--concurrency`` clients loop for ``--seconds``, each request drawn from a fixed mix:
streamed completions, chat, n = 2, clients that leave mid-stream, and malformed requests
(which must get a 4xx). The server's RSS is sampled every second. At the end every request
must be accounted for, no answer may be a 5xx other than the overload 503, and the server
must be back at rest (nothing running or waiting).

    python benchmarks/soak.py --seconds 60 --concurrency 32 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from typing import Any

import httpx
from common import add_server_arg, print_table, run_info, start_demo_server, write_json


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


KINDS = ("stream", "chat", "n2", "leave", "bad")
WEIGHTS = (4, 3, 1, 1, 1)


async def one(c: httpx.AsyncClient, kind: str, rng: random.Random) -> tuple[str, int, float]:
    """(kind, status, seconds) of one request of the mix."""
    t0 = time.monotonic()
    n = rng.randint(4, 48)
    if kind == "bad":
        r = await c.post("/v1/completions", json={"prompt": "x", "max_tokens": "16"})
        return kind, r.status_code, time.monotonic() - t0
    if kind == "chat":
        r = await c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": f"hello {n}"}], "max_tokens": n},
        )
        return kind, r.status_code, time.monotonic() - t0
    body: dict[str, Any] = {
        "prompt": f"soak {n}",
        "max_tokens": n,
        "ignore_eos": True,
        "stream": True,
        "n": 2 if kind == "n2" else 1,
    }
    async with c.stream("POST", "/v1/completions", json=body) as r:
        status = r.status_code
        async for line in r.aiter_lines():
            if kind == "leave" and line.startswith("data: {"):
                break  # the client goes away mid-stream
    return kind, status, time.monotonic() - t0


async def soak(
    url: str, pid: int, seconds: float, concurrency: int, seed: int
) -> tuple[list[tuple[str, int, float]], list[tuple[float, float]]]:
    results: list[tuple[str, int, float]] = []
    rss: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:

        async def client(i: int) -> None:
            rng = random.Random(seed + i)
            while time.monotonic() < end:
                kind = rng.choices(KINDS, WEIGHTS)[0]
                try:
                    results.append(await one(c, kind, rng))
                except httpx.HTTPError as e:
                    results.append((kind, -1, 0.0))
                    print(f"soak: {kind} failed: {type(e).__name__}: {e}", file=sys.stderr)

        async def sample() -> None:
            t0 = time.monotonic()
            while time.monotonic() < end:
                rss.append((time.monotonic() - t0, rss_mb(pid)))
                await asyncio.sleep(1.0)

        await asyncio.gather(sample(), *[client(i) for i in range(concurrency)])
    return results, rss


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="Soak duration (60).")
    ap.add_argument("--concurrency", type=int, default=32, help="Concurrent clients (32).")
    ap.add_argument("--seed", type=int, default=0, help="Workload seed.")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    add_server_arg(ap)
    args = ap.parse_args()
    proc, url = start_demo_server(["--max-model-len", "512", *args.server_arg])
    try:
        rss0 = rss_mb(proc.pid)
        results, rss = asyncio.run(soak(url, proc.pid, args.seconds, args.concurrency, args.seed))
        time.sleep(1.0)
        metrics = httpx.get(url + "/metrics").text
        at_rest = {
            name: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            for name in ("num_requests_running", "num_requests_waiting")
            if line.startswith(f"sarathi:{name}{{")
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    ok = [s for k, code, s in results if code == 200 and k != "leave"]
    errors_5xx = sum(1 for _, code, _ in results if code >= 500)
    bad_answered = all(code == 400 for k, code, _ in results if k == "bad")
    row = {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "requests": len(results),
        "requests_per_s": len(results) / args.seconds,
        "latency_p50_s": pct(ok, 0.5),
        "latency_p99_s": pct(ok, 0.99),
        "status_5xx": errors_5xx,
        "transport_errors": sum(1 for _, c, _ in results if c < 0),
        "bad_requests_all_400": bad_answered,
        "rss_start_mb": rss0,
        "rss_max_mb": max(m for _, m in rss),
        "rss_end_mb": rss[-1][1] if rss else rss0,
        "running_at_rest": at_rest.get("num_requests_running"),
        "waiting_at_rest": at_rest.get("num_requests_waiting"),
        "exit_code": proc.returncode,
    }
    print_table([row], list(row))
    write_json(
        args.json,
        {
            "info": run_info(),
            "workload": vars(args),
            "results": [row],
            "rss_mb_over_time": rss,
            "by_kind": {k: sum(1 for kk, *_ in results if kk == k) for k in KINDS},
        },
    )


if __name__ == "__main__":
    main()
