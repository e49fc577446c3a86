"""RMSNorm, computed in float32 like the reference implementation, optionally fused with
the residual add before it."""

from __future__ import annotations

import torch
from torch import nn

from sarathi.model_executor.layers import fused


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor | fused.SplitSums, residual: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """RMSNorm(x); with ``residual``: (RMSNorm(x + residual), x + residual). ``x`` may
        be a one-row matmul's split sums (on a GPU only, where they exist)."""
        if residual is None:
            if fused.usable(x):
                return fused.rms_norm(x, self.weight, self.eps)
            return self.reference(x)
        if fused.usable(x):
            return fused.add_rms_norm(x, residual, self.weight, self.eps)
        residual = x + residual
        return self.reference(residual), residual

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)
