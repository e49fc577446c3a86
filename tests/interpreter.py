"""Scripts run under Triton's interpreter in a subprocess: the Triton kernels checked on the
CPU (the GPU tests check them on the hardware). Each script prints OK when all its checks
pass."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="Triton is not installed (pip install triton)",
)


def run_interpreted(script: Path, timeout_s: float = 600) -> None:
    """Run ``script`` with TRITON_INTERPRET=1 and no GPU; fail with its output unless it
    exits cleanly and ends by printing OK."""
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), (
        done.stdout[-2000:] + done.stderr[-4000:]
    )
