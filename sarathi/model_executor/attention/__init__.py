"""Attention backends over the vattention slot layout."""

from __future__ import annotations

import importlib.util
from typing import Callable

import torch

from sarathi.model_executor.attention.metadata import AttentionMetadata
from sarathi.model_executor.attention.torch_backend import TorchAttention


def _triton() -> object:
    from sarathi.model_executor.attention.triton_backend import TritonAttention

    return TritonAttention()


# Backends are built lazily so a machine without Triton never imports it.
BACKENDS: dict[str, Callable[[], object]] = {"torch": TorchAttention, "triton": _triton}
GPU_ONLY = frozenset({"triton"})


def triton_usable(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("triton") is not None


def resolve_attention_backend(name: str, device: torch.device) -> str:
    """``auto`` is our Triton kernels on a CUDA device where Triton imports, else SDPA."""
    if name == "auto":
        return "triton" if triton_usable(device) else "torch"
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is not available; available: "
                         f"{', '.join(BACKENDS)}")
    if name in GPU_ONLY and not triton_usable(device):
        raise ValueError(f"attention backend {name!r} needs a CUDA device and Triton")
    return name


def get_attention_backend(name: str, device: torch.device | None = None) -> object:
    """Build the named backend (``auto``: the fastest available on ``device``; without a
    device, the default CUDA device if there is one)."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return BACKENDS[resolve_attention_backend(name, device)]()


__all__ = ["AttentionMetadata", "get_attention_backend", "resolve_attention_backend"]
