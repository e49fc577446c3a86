"""Fused Triton kernels for the small per-layer ops: RMSNorm, rotary, SiLU-and-mul.

In eager PyTorch each of these is 5-10 elementwise kernels; at decode batch sizes every one
of them is a launch plus a pass over memory, which dominates the step after the matmuls.
Each kernel here is one pass, and rounds where the PyTorch reference rounds (to the input
dtype after each op the reference does in that dtype), so results match it closely.

The reference implementations live with the layers (layernorm.py, rotary.py, models/llama.py)
and stay the path on CPU or without Triton; tests compare the two on the GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch


@functools.lru_cache(maxsize=1)
def _triton_present() -> bool:
    return importlib.util.find_spec("triton") is not None


def usable(x: torch.Tensor) -> bool:
    """True where the fused kernels run: a CUDA tensor with Triton installed (and
    ``SARATHI_FUSED=0`` not set: benchmarks time the unfused baseline in the same run)."""
    return x.is_cuda and _triton_present() and os.environ.get("SARATHI_FUSED", "1") != "0"


if _triton_present():
    import triton
    import triton.language as tl

    @triton.jit
    def _rms_norm_kernel(X, W, Out, stride_xa, stride_xb, nb, n, eps,
                         BLOCK: tl.constexpr):
        row = tl.program_id(0)
        a, b = row // nb, row % nb
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(X + a.to(tl.int64) * stride_xa + b * stride_xb + cols, mask=mask,
                    other=0.0).to(tl.float32)
        r = tl.rsqrt(tl.sum(x * x, 0) / n + eps)
        w = tl.load(W + cols, mask=mask, other=0.0)
        # Reference: weight * (x * r).to(dtype), the product in the weight's dtype.
        y = (x * r).to(X.dtype.element_ty).to(tl.float32) * w.to(tl.float32)
        tl.store(Out + row.to(tl.int64) * n + cols, y.to(Out.dtype.element_ty), mask=mask)

    @triton.jit
    def _silu_mul_kernel(GU, Out, stride_t, inter, BLOCK: tl.constexpr):
        t = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inter
        base = GU + t.to(tl.int64) * stride_t
        g = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(base + inter + cols, mask=mask, other=0.0).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(Out.dtype.element_ty).to(tl.float32)
        tl.store(Out + t.to(tl.int64) * inter + cols, (s * u).to(Out.dtype.element_ty),
                 mask=mask)

    @triton.jit
    def _rotary_kernel(X, Out, Cos, Sin, Pos, stride_xt, stride_xh, stride_c, heads,
                       HALF: tl.constexpr, BLOCK_H: tl.constexpr):
        t = tl.program_id(0)
        h = tl.arange(0, BLOCK_H)
        hmask = h < heads
        d = tl.arange(0, HALF)
        pos = tl.load(Pos + t).to(tl.int64)
        dt = Out.dtype.element_ty
        # The table repeats its first half, so one half of cos/sin serves both halves.
        c = tl.load(Cos + pos * stride_c + d).to(dt).to(tl.float32)
        s = tl.load(Sin + pos * stride_c + d).to(dt).to(tl.float32)
        src = X + t.to(tl.int64) * stride_xt + h[:, None] * stride_xh + d[None, :]
        x1 = tl.load(src, mask=hmask[:, None], other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF, mask=hmask[:, None], other=0.0).to(tl.float32)
        # Reference: x * cos + cat(-x2, x1) * sin, each product rounded to the dtype.
        o1 = (x1 * c[None, :]).to(dt).to(tl.float32) + (-x2 * s[None, :]).to(dt).to(tl.float32)
        o2 = (x2 * c[None, :]).to(dt).to(tl.float32) + (x1 * s[None, :]).to(dt).to(tl.float32)
        dst = Out + (t.to(tl.int64) * heads + h[:, None]) * (2 * HALF) + d[None, :]
        tl.store(dst, o1.to(dt), mask=hmask[:, None])
        tl.store(dst + HALF, o2.to(dt), mask=hmask[:, None])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim of a 2-D or 3-D tensor whose last dim is contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    n = x.shape[-1]
    x3 = x if x.dim() == 3 else x.unsqueeze(1)
    out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype),
                      device=x.device)
    rows = x3.shape[0] * x3.shape[1]
    if rows:
        _rms_norm_kernel[(rows,)](x3, weight, out, x3.stride(0), x3.stride(1), x3.shape[1], n,
                                  eps, BLOCK=triton.next_power_of_2(n),
                                  num_warps=4 if n <= 4096 else 8)
    return out


def silu_and_mul(gate_up: torch.Tensor, inter: int) -> torch.Tensor:
    """silu(gate_up[:, :inter]) * gate_up[:, inter:]."""
    t = gate_up.shape[0]
    if gate_up.stride(-1) != 1:
        gate_up = gate_up.contiguous()
    out = torch.empty(t, inter, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    if t:
        _silu_mul_kernel[(t, triton.cdiv(inter, block))](gate_up, out, gate_up.stride(0), inter,
                                                         BLOCK=block, num_warps=4)
    return out


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           positions: torch.Tensor) -> torch.Tensor:
    """x: [T, H, D] (last dim contiguous); cos/sin: [max_len, D] tables. Returns new [T, H, D]."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    t, heads, d = x.shape
    out = torch.empty(t, heads, d, dtype=x.dtype, device=x.device)
    if t:
        _rotary_kernel[(t,)](x, out, cos, sin, positions, x.stride(0), x.stride(1),
                             cos.stride(0), heads, HALF=d // 2,
                             BLOCK_H=triton.next_power_of_2(heads), num_warps=4)
    return out
