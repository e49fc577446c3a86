"""Random weights in place of a checkpoint (``load_format="dummy"``), for speed benchmarks
of real model shapes without their files. Generated on the model's device: a 7B model
fills in seconds, and nothing crosses the host bus."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_dummy_weights(model: nn.Module, seed: int) -> None:
    """Norm scales 1, everything else small uniform noise: finite, non-degenerate activations
    (outputs are meaningless, and differ between tensor-parallel sizes)."""
    gen = torch.Generator(device=next(model.parameters()).device)
    gen.manual_seed(seed)
    for name, param in model.named_parameters():
        if param.dim() == 1 and name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            fan_in = param.shape[-1]
            bound = fan_in**-0.5
            param.uniform_(-bound, bound, generator=gen)
