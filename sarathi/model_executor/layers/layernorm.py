"""RMSNorm, computed in float32 like the reference implementation, optionally fused with
the residual add before it."""

from __future__ import annotations

import torch
from torch import nn

from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches
from sarathi.model_executor.layers import fused, gemv
from sarathi.model_executor.layers.all_reduce_norm import all_reduce_add_rms_norm


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, kernels: KernelSwitches = REFERENCE) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.kernels = kernels

    def forward(
        self, x: torch.Tensor | gemv.SplitSums, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """RMSNorm(x); with ``residual``: (RMSNorm(x + residual), x + residual). ``x`` may
        be a one-row matmul's split sums (on a GPU only, where they exist), or a rank's
        share of a row-parallel one, summed over the ranks here."""
        k = self.kernels
        if residual is None:
            assert isinstance(x, torch.Tensor)  # split sums always come with a residual
            if k.fused:
                return fused.rms_norm(x, self.weight, self.eps, k.pdl)
            return self.reference(x)
        if k.fused:
            if isinstance(x, gemv.SplitSums) and x.peers is not None:
                return all_reduce_add_rms_norm(x, residual, self.weight, self.eps, k.pdl)
            return fused.add_rms_norm(x, residual, self.weight, self.eps, k.pdl)
        assert isinstance(x, torch.Tensor)  # split sums exist only where kernels are fused
        residual = x + residual
        return self.reference(residual), residual

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)
