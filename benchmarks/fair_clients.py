"""One client floods the server, another asks now and then: how long the other waits.

The server runs on the demo model with two API keys (two clients). Client 1 keeps
``--flood`` requests of ``--flood-n`` samples each in flight (retrying a 503 after 0.2 s);
after ``--warmup`` seconds client 2 sends ``--asks`` requests one after the other, retrying a
503 every second, and the table shows, for each, its status, seconds from first try to
answer, and tries. Client 2's requests take turns with client 1's in the waiting queue, and
a full queue still takes a client with nothing in flight (docs/server.md, "Clients take
turns"); before that, client 2 waited behind the whole flood.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from typing import Any

import httpx
from common import add_server_arg, print_table, run_info, start_demo_server, write_json

FLOODER, OTHER = "flood-key", "other-key"


async def run(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    body = {"prompt": "the flood", "max_tokens": args.flood_tokens, "ignore_eos": True}
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=args.flood + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:

        async def flood_one() -> None:
            while not stop.is_set():
                r = await c.post(
                    "/v1/completions",
                    json={**body, "n": args.flood_n},
                    headers={"Authorization": f"Bearer {FLOODER}"},
                )
                if r.status_code == 503:
                    await asyncio.sleep(0.2)

        flood = asyncio.gather(*[flood_one() for _ in range(args.flood)])
        await asyncio.sleep(args.warmup)
        rows = []
        for i in range(args.asks):
            start, tries = time.monotonic(), 0
            while True:
                tries += 1
                r = await c.post(
                    "/v1/completions",
                    json={**body, "max_tokens": args.ask_tokens},
                    headers={"Authorization": f"Bearer {OTHER}"},
                )
                if r.status_code != 503:
                    break
                await asyncio.sleep(1.0)
            rows.append(
                {
                    "ask": i,
                    "status": r.status_code,
                    "seconds": time.monotonic() - start,
                    "tries": tries,
                }
            )
        stop.set()
        flood.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flood
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flood", type=int, default=300, help="Client 1's requests in flight (300).")
    ap.add_argument("--flood-n", type=int, default=8, help="Samples per flood request (8).")
    ap.add_argument("--flood-tokens", type=int, default=64, help="Tokens per flood sample (64).")
    ap.add_argument("--asks", type=int, default=5, help="Client 2's requests, in turn (5).")
    ap.add_argument("--ask-tokens", type=int, default=16, help="Tokens per request of client 2.")
    ap.add_argument("--warmup", type=float, default=5.0, help="Seconds of flood first (5).")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    add_server_arg(ap)
    args = ap.parse_args()
    proc, url = start_demo_server(
        ["--max-model-len", "512", "--api-key", FLOODER, OTHER, *args.server_arg]
    )
    try:
        rows = asyncio.run(run(url, args))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    print_table(rows, ["ask", "status", "seconds", "tries"])
    write_json(args.json, {"info": run_info(), "workload": vars(args), "results": rows})


if __name__ == "__main__":
    main()
