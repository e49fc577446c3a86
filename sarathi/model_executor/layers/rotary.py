"""Rotary position embedding with the scaling kinds Llama-family configs use."""

from __future__ import annotations

import math
from typing import Any

import torch

from sarathi.model_executor.attention.metadata import KVIndex, store_kv
from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches
from sarathi.model_executor.layers import fused, gemv

SUPPORTED_ROPE = ("default", "linear", "llama3")


def inv_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    params = scaling or {}
    kind = params.get("rope_type", "default")
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(params["factor"])
    if kind == "llama3":
        factor = float(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        old_len = float(params["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(
        f"rope_scaling type {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE)}"
    )


class RotaryEmbedding:
    """cos/sin tables for every position up to ``max_len``, built once on the device."""

    def __init__(
        self,
        head_dim: int,
        theta: float,
        scaling: dict[str, Any] | None,
        max_len: int,
        device: torch.device,
        kernels: KernelSwitches = REFERENCE,
    ) -> None:
        self.kernels = kernels
        inv = inv_frequencies(head_dim, theta, scaling)
        t = torch.arange(max_len, dtype=torch.int64).float()
        freqs = torch.outer(t, inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos = emb.cos().to(device)
        self.sin = emb.sin().to(device)

    def apply_and_store(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        index: KVIndex,
        sums: gemv.SplitSums | None = None,
    ) -> torch.Tensor:
        """Rotate q [T, Hq, D] and k [T, Hkv, D], write k and v to the cache rows ``index``
        names; returns the rotated q. One fused kernel on a GPU. ``sums``: q, k and v are
        views into the first split of these split sums (``fused.rotary_store_kv``)."""
        if self.kernels.fused:
            return fused.rotary_store_kv(
                q, k, v, self.cos, self.sin, positions, k_cache, v_cache, index,
                self.kernels.pdl, sums,
            )  # fmt: skip
        assert sums is None  # split sums exist only where kernels are fused
        q, k = self.reference(q, k, positions)
        store_kv(k_cache, v_cache, k, v, index)
        return q

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: [T, Hq, D], k: [T, Hk, D]; computed in their dtype, as transformers does."""
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
