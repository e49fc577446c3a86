"""`python -m sarathi serve` as users run it: startup line, then SIGTERM/SIGINT ends in-flight
streams with an error event and the process exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(*extra: str) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarathi", "serve", "--port", "0", "--max-model-len", "256",
         "--log-level", "warning", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks until the server prints; EOF if it died
        seen.append(line)
        if " serving " in line:
            url = re.search(r"on (http://\S+)", line).group(1)
            return proc, url, line
    proc.wait(30)
    raise AssertionError("the server did not start:\n" + "".join(seen))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_streams_with_an_error_event_and_exits_0(sig):
    proc, url, line = _start()
    try:
        for word in ("'demo'", "random weights", "dtype float32", "device cpu", "attention",
                     "slots", "tokens"):
            assert word in line, line
        body = {"prompt": "a long story", "max_tokens": 250, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as h:
            with h.stream("POST", "/v1/completions", json=body) as resp:
                lines = resp.iter_lines()
                first = next(line for line in lines if line)
                assert first.startswith("data: {")
                proc.send_signal(sig)
                rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        event = json.loads(rest[-2][len("data: "):])
        assert "shutting down" in event["error"]["message"]
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
