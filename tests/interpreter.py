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


def patch_scalar_index() -> None:
    """For the scripts themselves, before any kernel runs: Triton 3.6's interpreter turns a
    loaded scalar into an index with int() of a one-element array, which NumPy 2 refuses;
    .item() works for both shapes."""
    import triton.runtime.interpreter as interp

    patch = interp._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):  # type: ignore[no-untyped-def]
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interp._patch_lang_tensor = _patch_lang_tensor
