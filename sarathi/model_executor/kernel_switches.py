"""Which fast kernel paths a model's layers take: resolved once, when the model is built.

The layers hold a ``KernelSwitches`` and never read the environment while they run. On a
CUDA device with Triton every switch is on unless its ``SARATHI_*`` variable turns it off
(``sarathi/envs.py``); elsewhere, and by default for layers built on their own, the PyTorch
reference ops run.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sarathi.envs import env


@functools.cache
def triton_installed() -> bool:
    """Whether Triton can be imported (looked up once; nothing is imported here)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (asked once per device): kernels size
    their grids by it."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def gluon_hopper(device: torch.device) -> bool:
    """Whether ``device`` runs the Gluon Hopper kernels: compute capability 9.x (their
    warpgroup MMAs are Hopper's alone) and a Triton with Gluon."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        return False
    return importlib.util.find_spec("triton.experimental.gluon") is not None


@dataclass(frozen=True)
class KernelSwitches:
    fused: bool = False  # fused Triton kernels for the small per-layer ops
    gemv: str = "0"  # one-row matmuls: "0" cuBLAS, "1" the GEMV where faster, "all" always
    pdl: bool = False  # programmatic dependent launch of our Triton kernels
    # A mixed step's decode attention overlapping its prefill attention: launched right behind
    # it with PDL where ``pdl`` is on, otherwise on a second stream beside it.
    overlap: bool = False
    # Prefill attention by the warp-specialized Gluon kernel (Hopper) where it applies.
    warp_prefill: bool = False

    @classmethod
    def resolve(
        cls, device: torch.device, environ: Mapping[str, str] | None = None
    ) -> KernelSwitches:
        from sarathi.model_executor import pdl

        fused = (
            device.type == "cuda" and triton_installed() and env("SARATHI_FUSED", environ) != "0"
        )
        if not fused:
            return cls()
        return cls(
            True,
            env("SARATHI_GEMV", environ),
            env("SARATHI_PDL", environ) != "0" and pdl.supported(device),
            env("SARATHI_OVERLAP", environ) != "0",
            env("SARATHI_WARP_PREFILL", environ) != "0" and gluon_hopper(device),
        )


REFERENCE = KernelSwitches()
