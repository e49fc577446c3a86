"""A real `python -m sarathi serve` in a subprocess on 127.0.0.1, for the reliability tests:
its own process, so its RSS, its event loop and its signals are the server's alone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    host: str
    port: int

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> str:
        """SIGTERM, wait, and the server's remaining output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        return out


def start(*flags: str, open_files: int | None = None) -> ServerProcess:
    """``open_files``: the server's soft limit on open files as it starts (else this
    process's)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def limit_open_files() -> None:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    proc = subprocess.Popen(
        [sys.executable, "-m", "sarathi", "serve", "--port", "0", "--log-level", "warning", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        preexec_fn=limit_open_files if open_files is not None else None,
    )
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks until the server prints; EOF if it died
        seen.append(line)
        m = re.search(r"on (http://([\d.]+):(\d+))", line)
        if " serving " in line and m:
            return ServerProcess(proc, m.group(1), m.group(2), int(m.group(3)))
    proc.wait(30)
    raise AssertionError("the server did not start:\n" + "".join(seen))
