"""Fixtures shared by the vattention tests."""

from __future__ import annotations

import pytest
import torch

from vattention.backends import cuda_extension_error


def _cuda_skip_reason() -> str | None:
    return cuda_extension_error() if torch.cuda.is_available() else "no CUDA device"


@pytest.fixture
def cuda_device() -> torch.device:
    """The current CUDA device; skips the test where the cuda backend cannot run."""
    reason = _cuda_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    torch.cuda.init()
    return torch.device("cuda", torch.cuda.current_device())


@pytest.fixture
def device_for(request: pytest.FixtureRequest):
    """Map a backend name to the device it runs on, skipping cuda where it cannot run."""

    def pick(backend: str) -> torch.device:
        if backend == "cuda":
            return request.getfixturevalue("cuda_device")
        return torch.device("cpu")

    return pick
