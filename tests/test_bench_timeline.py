"""benchmarks/common.gpu_timeline: busy time and per-kernel shares when kernels overlap
(programmatic dependent launch), from fake profiler events."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from common import gpu_timeline  # noqa: E402


def _event(name: str, start: float, end: float, cuda: bool = True) -> SimpleNamespace:
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    return SimpleNamespace(name=name, device_type=kind,
                           time_range=SimpleNamespace(start=start, end=end))


def test_serial_kernels_add_their_durations_and_gaps_are_idle() -> None:
    line = gpu_timeline([_event("b", 12, 20), _event("a", 0, 10), _event("cpu", 0, 99, False)])
    assert line.added_us == {"a": [10], "b": [8]}
    assert (line.busy_us, line.idle_us) == (18, 2)


def test_an_overlapping_kernel_adds_only_what_reaches_past_the_others() -> None:
    # "wait" starts early and waits inside "gemv"; "tiny" ends inside "gemv".
    line = gpu_timeline([_event("gemv", 0, 10), _event("wait", 4, 13), _event("tiny", 5, 6)])
    assert line.added_us == {"gemv": [10], "wait": [3], "tiny": [0]}
    assert (line.busy_us, line.idle_us) == (13, 0)
