"""Fused Triton RMSNorm, rotary and SiLU-and-mul against their PyTorch references (GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sarathi.model_executor.layers import fused
from sarathi.model_executor.layers.layernorm import RMSNorm
from sarathi.model_executor.layers.rotary import RotaryEmbedding

pytestmark = pytest.mark.gpu


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all()
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("rows,size", [(1, 4096), (37, 1024), (300, 128)])
def test_rms_norm(dtype: torch.dtype, rows: int, size: int) -> None:
    norm = RMSNorm(size, 1e-5).to("cuda", dtype)
    norm.weight.data.normal_()
    x = torch.randn(rows, size, dtype=dtype, device="cuda") * 3
    assert _rel(fused.rms_norm(x, norm.weight, norm.eps), norm.reference(x)) < 1e-2


def test_rms_norm_strided_heads() -> None:
    qkv = torch.randn(9, 16 * 128 + 2 * 8 * 128, dtype=torch.bfloat16, device="cuda")
    q = qkv[:, :16 * 128].view(9, 16, 128)  # a view with a row stride of the fused width
    norm = RMSNorm(128, 1e-6).to("cuda", torch.bfloat16)
    norm.weight.data.normal_()
    assert _rel(fused.rms_norm(q, norm.weight, norm.eps), norm.reference(q)) < 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_silu_and_mul(dtype: torch.dtype) -> None:
    gu = torch.randn(33, 2 * 3000, dtype=dtype, device="cuda")
    ref = F.silu(gu[:, :3000]) * gu[:, 3000:]
    assert _rel(fused.silu_and_mul(gu, 3000), ref) < 1e-2


@pytest.mark.parametrize("hq,hk,d", [(32, 8, 128), (16, 8, 128), (14, 2, 64)])
def test_rotary(hq: int, hk: int, d: int) -> None:
    rot = RotaryEmbedding(d, 500000.0, None, 4096, torch.device("cuda"))
    t = 50
    qkv = torch.randn(t, (hq + 2 * hk) * d, dtype=torch.bfloat16, device="cuda")
    q = qkv[:, :hq * d].view(t, hq, d)
    k = qkv[:, hq * d:(hq + hk) * d].view(t, hk, d)
    pos = torch.randint(0, 4096, (t,), device="cuda")
    rq, rk = rot.reference(q, k, pos)
    fq, fk = rot.apply(q, k, pos)
    assert _rel(fq, rq) < 1e-2 and _rel(fk, rk) < 1e-2
