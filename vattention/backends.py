"""Which backends exist on this machine, and how one is built for a device."""

from __future__ import annotations

import importlib
import logging
import math

import torch

from vattention.pager import Mapper
from vattention.views import CacheShape

BACKENDS = ("auto", "cuda", "cpu", "dense")
_OS_PAGE = 4096
_HOST_BLOCK_TOKENS = 16
_DEVICE_BLOCK_TOKENS = 64
logger = logging.getLogger("vattention")


def cuda_extension_error() -> str | None:
    """Why the CUDA backend cannot be used here, or None when it can."""
    try:
        importlib.import_module("vattention._C")
    except ImportError as exc:
        return f"the vattention._C extension is not built ({exc})"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def available_backends() -> list[str]:
    """Backends that can be created on this machine, the preferred first."""
    names = ["cuda"] if cuda_extension_error() is None else []
    return [*names, "cpu", "dense"]


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete backend and reject combinations that cannot work."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cpu":
            return "cpu"
        if device.type == "cuda":
            reason = cuda_extension_error()
            if reason is None:
                return "cuda"
            logger.warning(
                "vattention: the cuda backend is unavailable (%s); falling back to the dense "
                "backend (the whole budget allocated up front, no mapping on demand)",
                reason,
            )
        return "dense"
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"the cpu backend needs a cpu device, got {device}")
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"the cuda backend needs a cuda device, got {device}")
        reason = cuda_extension_error()
        if reason is not None:
            raise ValueError(f"the cuda backend is unavailable: {reason}")
    return backend


def default_page_bytes(backend: str, device: torch.device, row_bytes: int) -> int:
    """The smallest page that the backend can map, that holds whole token rows, and at
    least a minimum of tokens (below)."""
    if backend == "cuda":
        from vattention.cuda import granularity

        # Each page mapped costs the driver ~27 us (cuMemSetAccess, the same for 2 or 32
        # MiB on an H200), while prefilling costs per token: with at least
        # _DEVICE_BLOCK_TOKENS tokens a page, mapping a cached prefix stays a few percent
        # of prefilling it (2 MiB holds 8 Llama-2-7B or 32 Llama-3-8B tokens in the mega
        # layout).
        unit = math.lcm(granularity(device), row_bytes)
        minimum = _DEVICE_BLOCK_TOKENS
    else:
        # Small pages on the host: the OS page is the granularity there, and small blocks
        # keep the scheduler's accounting fine-grained for small test models; but at least
        # _HOST_BLOCK_TOKENS tokens each, or decodes would cross a block (a pager call)
        # every few steps.
        unit = math.lcm(_OS_PAGE, row_bytes)
        minimum = _HOST_BLOCK_TOKENS
    page = unit
    while page // row_bytes < minimum:
        page *= 2
    return page


def create_mapper(backend: str, shape: CacheShape, device: torch.device, num_blocks: int) -> Mapper:
    if backend == "cuda":
        from vattention.cuda import DeviceMapper

        return DeviceMapper(shape, device, num_blocks)
    if backend == "cpu":
        from vattention.cpu import HostMapper

        return HostMapper(shape, num_blocks)
    from vattention.dense import DenseMapper

    return DenseMapper(shape, device)
