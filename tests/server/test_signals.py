"""`python -m sarathi serve` as users run it: startup line; on SIGTERM/SIGINT the server stops
accepting, lets running streams finish within --graceful-shutdown-seconds, ends the rest with
an error event and exits 0; a second signal exits at once. If its engine dies, it exits 1."""

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


# The command line, after making the engine's third step fail as a device error would.
FAILING_SERVE = """
import sys
from sarathi.engine.llm_engine import LLMEngine
step, calls = LLMEngine.step, [0]
def failing(self):
    calls[0] += 1
    if calls[0] >= 3:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return step(self)
LLMEngine.step = failing
from sarathi.entrypoints.cli import main
sys.exit(main(["serve", *sys.argv[1:]]))
"""


def _start(
    *extra: str, max_model_len: int = 256, launch: tuple[str, ...] = ("-m", "sarathi", "serve")
) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            *launch,
            "--port",
            "0",
            "--max-model-len",
            str(max_model_len),
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks until the server prints; EOF if it died
        seen.append(line)
        if " serving " in line:
            url = re.search(r"on (http://\S+)", line).group(1)
            return proc, url, line
    proc.wait(30)
    raise AssertionError("the server did not start:\n" + "".join(seen))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_running_streams_finish_and_exits_0(sig):
    proc, url, line = _start("--graceful-shutdown-seconds", "60")
    try:
        for word in (
            "'demo'",
            "random weights",
            "dtype float32",
            "device cpu",
            "attention",
            "slots",
            "tokens",
        ):
            assert word in line, line
        body = {"prompt": "a story", "max_tokens": 40, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as h:
            with h.stream("POST", "/v1/completions", json=body) as resp:
                lines = resp.iter_lines()
                first = next(line for line in lines if line)
                assert first.startswith("data: {")
                proc.send_signal(sig)
                rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        last = json.loads(rest[-2][len("data: ") :])
        assert last["choices"][0]["finish_reason"] == "length"  # finished, not cut
        assert proc.wait(60) == 0
    finally:
        _stop(proc)


def test_streams_still_running_at_the_deadline_end_with_an_error_event():
    proc, url, _ = _start("--graceful-shutdown-seconds", "0.5", max_model_len=2048)
    try:
        body = {"prompt": "a long story", "max_tokens": 2000, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as h:
            with h.stream("POST", "/v1/completions", json=body) as resp:
                lines = resp.iter_lines()
                next(line for line in lines if line)
                proc.send_signal(signal.SIGTERM)
                rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        event = json.loads(rest[-2][len("data: ") :])
        assert "shutting down" in event["error"]["message"]
        assert proc.wait(60) == 0
    finally:
        _stop(proc)


def test_a_second_signal_exits_at_once():
    proc, url, _ = _start("--graceful-shutdown-seconds", "60")
    try:
        body = {"prompt": "a long story", "max_tokens": 250, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as h:
            with h.stream("POST", "/v1/completions", json=body) as resp:
                lines = resp.iter_lines()
                next(line for line in lines if line)
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0
        # uvicorn skips the app's shutdown on a forced exit and logged the lifespan task's
        # cancellation as a traceback.
        assert proc.stdout is not None
        log = proc.stdout.read()
        assert "Traceback" not in log and "CancelledError" not in log, log
    finally:
        _stop(proc)


def test_an_engine_failure_ends_the_streams_and_exits_1():
    """As vLLM's server does: one that stayed up refusing every request would never be
    restarted by a supervisor that restarts on exit."""
    proc, url, _ = _start("--graceful-shutdown-seconds", "60", launch=("-c", FAILING_SERVE))
    try:
        body = {"prompt": "a story", "max_tokens": 40, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as h:
            with h.stream("POST", "/v1/completions", json=body) as resp:
                lines = [line for line in resp.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2][len("data: ") :])["error"]
        assert error["code"] == "engine_dead" and "illegal memory access" in error["message"]
        assert proc.wait(60) == 1
        assert proc.stdout is not None
        log = proc.stdout.read()
        assert "sarathi server stopped: its engine failed" in log, log
    finally:
        _stop(proc)
