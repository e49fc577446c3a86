"""Attention backends: over the vattention slot layout (``torch``, ``triton``) or over the
paged block-table cache (``paged``, the baseline)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sarathi.model_executor.attention.metadata import (
    AttentionBackend,
    AttentionMetadata,
    DecodeRope,
)
from sarathi.model_executor.attention.torch_backend import TorchAttention
from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches, triton_installed


def _torch(kernels: KernelSwitches) -> AttentionBackend:
    return TorchAttention()


def _triton(kernels: KernelSwitches) -> AttentionBackend:
    from sarathi.model_executor.attention.triton_backend import TritonAttention

    return TritonAttention(kernels=kernels)


# Backends are built lazily so a machine without Triton never imports it. ``paged`` is
# built by ``get_attention_backend`` with its cache's block table.
BACKENDS: dict[str, Callable[[KernelSwitches], AttentionBackend]] = {
    "torch": _torch,
    "triton": _triton,
}
NAMES = (*BACKENDS, "paged")
GPU_ONLY = frozenset({"triton"})


def triton_usable(device: torch.device) -> bool:
    return device.type == "cuda" and triton_installed()


def resolve_attention_backend(name: str, device: torch.device) -> str:
    """``auto`` is our Triton kernels on a CUDA device where Triton imports, else SDPA."""
    if name == "auto":
        return "triton" if triton_usable(device) else "torch"
    if name not in NAMES:
        raise ValueError(
            f"attention backend {name!r} is not available; available: {', '.join(NAMES)}"
        )
    if name in GPU_ONLY and not triton_usable(device):
        raise ValueError(f"attention backend {name!r} needs a CUDA device and Triton")
    return name


def uses_paged_cache(name: str) -> bool:
    """Whether the backend reads the paged block-table cache instead of vattention's."""
    return name == "paged"


def get_attention_backend(
    name: str,
    device: torch.device | None = None,
    block_tables: torch.Tensor | None = None,
    block_tokens: int = 0,
    kernels: KernelSwitches = REFERENCE,
) -> AttentionBackend:
    """Build the named backend (``auto``: the fastest available on ``device``; without a
    device, the default CUDA device if there is one). ``paged`` needs the paged cache's
    block table and tokens per block; ``kernels``: the model's switches (programmatic
    dependent launch, overlapped attention in mixed steps) for the Triton kernels."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = resolve_attention_backend(name, device)
    if name == "paged":
        from sarathi.model_executor.attention.paged_backend import PagedAttention

        if block_tables is None or block_tokens <= 0:
            raise ValueError("the paged attention backend needs its cache's block table")
        return PagedAttention(block_tables, block_tokens, triton_usable(device), kernels)
    return BACKENDS[name](kernels)


__all__ = [
    "AttentionBackend",
    "AttentionMetadata",
    "DecodeRope",
    "get_attention_backend",
    "resolve_attention_backend",
    "uses_paged_cache",
]
