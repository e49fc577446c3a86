"""Fused Triton RMSNorm (with and without the residual add), rotary with the K/V write and
SiLU-and-mul against their PyTorch references (GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sarathi.model_executor.kernel_switches import KernelSwitches
from sarathi.model_executor.layers import fused, gemv
from sarathi.model_executor.layers.layernorm import RMSNorm
from sarathi.model_executor.layers.rotary import RotaryEmbedding

pytestmark = pytest.mark.gpu


def _kernels(pdl: bool | None = None) -> KernelSwitches:
    """The switches a model on this GPU gets; ``pdl`` forced where given."""
    k = KernelSwitches.resolve(torch.device("cuda"))
    return k if pdl is None else KernelSwitches(k.fused, k.gemv, pdl and k.pdl)


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows,size", [(1, 4096), (37, 1024), (300, 5120)])
def test_add_rms_norm(dtype: torch.dtype, rows: int, size: int) -> None:
    norm = RMSNorm(size, 1e-5).to("cuda", dtype)
    norm.weight.data.normal_()
    x = torch.randn(rows, size, dtype=dtype, device="cuda") * 3
    residual = torch.randn(rows, size, dtype=dtype, device="cuda")
    out, new_residual = fused.add_rms_norm(x, residual, norm.weight, norm.eps)
    assert torch.equal(new_residual, x + residual)  # the sum rounds once, as the reference's
    assert _rel(out, norm.reference(x + residual)) < 1e-2


@pytest.mark.parametrize("layout", ["slots", "paged"])
@pytest.mark.parametrize("hq,hk,d", [(32, 8, 128), (16, 8, 128), (14, 2, 64)])
def test_rotary_store_kv(hq: int, hk: int, d: int, layout: str) -> None:
    rot = RotaryEmbedding(d, 500000.0, None, 4096, torch.device("cuda"))
    t = 50
    qkv = torch.randn(t, (hq + 2 * hk) * d, dtype=torch.bfloat16, device="cuda")
    q = qkv[:, :hq * d].view(t, hq, d)  # views with the fused projection's row stride
    k = qkv[:, hq * d:(hq + hk) * d].view(t, hk, d)
    v = qkv[:, (hq + hk) * d:].view(t, hk, d)
    pos = torch.randperm(4096, device="cuda")[:t]
    if layout == "slots":
        # K and V interleaved per position, as a strided view: the kernel must use strides.
        both = torch.zeros(4, 4096, 2, hk, d, dtype=torch.bfloat16, device="cuda")
        k_cache, v_cache = both[:, :, 0], both[:, :, 1]
        index = (torch.randint(0, 4, (t,), device="cuda"), pos)
    else:
        k_cache = torch.zeros(64, 16, hk, d, dtype=torch.bfloat16, device="cuda")
        v_cache = torch.zeros_like(k_cache)
        index = (torch.randperm(64, device="cuda")[:t], torch.randint(0, 16, (t,), device="cuda"))
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    rq, rk = rot.reference(q, k, pos)
    ref_k[index], ref_v[index] = rk, v
    fq = rot.apply_and_store(q, k, v, pos, k_cache, v_cache, index)
    # The reference's roundings exactly (each product, then the sum): no FMA contraction.
    assert torch.equal(fq, rq)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)


@pytest.mark.parametrize("n,k,bias", [(4096, 4096, False), (1000, 4000, True), (37, 11008, False)])
@pytest.mark.parametrize("cfg", [gemv.GemvConfig(16, 256, 8), gemv.GemvConfig(64, 128, 1, 8),
                                 gemv.GemvConfig(8, 512, 16), gemv.gemv_config(32768, 4096)])
def test_gemv(n: int, k: int, bias: bool, cfg: gemv.GemvConfig) -> None:
    w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, dtype=torch.bfloat16, device="cuda") if bias else None
    x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
    ref = F.linear(x.float(), w.float(), None if b is None else b.float())
    assert _rel(gemv.gemv(x, w, b, cfg), ref) < 1e-2


def test_split_sums_feed_the_fused_kernels() -> None:
    """o_proj -> residual add + RMSNorm and gate_up -> SiLU-and-mul at batch 1, with the
    matmul's K splits summed inside the consumer: same result as summing them first."""
    h, inter = 1024, 3000
    norm = RMSNorm(h, 1e-5).to("cuda", torch.bfloat16)
    norm.weight.data.normal_()
    x = torch.randn(1, 2048, dtype=torch.bfloat16, device="cuda")
    w_o = torch.randn(h, 2048, dtype=torch.bfloat16, device="cuda") / 40
    w_gu = torch.randn(2 * inter, 2048, dtype=torch.bfloat16, device="cuda") / 40
    residual = torch.randn(1, h, dtype=torch.bfloat16, device="cuda")
    cfg = gemv.GemvConfig(16, 128, 4, 8)
    o = gemv.gemv(x, w_o, None, cfg, keep_splits=True)
    assert isinstance(o, gemv.SplitSums) and o.parts.shape == (4, h)
    whole = o.total()
    assert _rel(whole, F.linear(x.float(), w_o.float())) < 1e-2
    out, new_residual = fused.add_rms_norm(o, residual, norm.weight, norm.eps)
    ref_out, ref_residual = fused.add_rms_norm(whole, residual, norm.weight, norm.eps)
    assert torch.equal(new_residual, ref_residual) and torch.equal(out, ref_out)
    gu = gemv.gemv(x, w_gu, None, cfg, keep_splits=True)
    assert torch.equal(fused.silu_and_mul(gu, inter), fused.silu_and_mul(gu.total(), inter))


@pytest.mark.parametrize("inter,k", [(11008, 4096), (5504, 4096), (3000, 2048)])
def test_gated_gemv_matches_gemv_then_silu_and_mul(inter: int, k: int) -> None:
    """Batch-1 gate|up matmul with SiLU-and-mul in one kernel, against the split-K GEMV then
    silu_and_mul (bfloat16 roundings of gate, up and silu alike; the sums' order differs)."""
    x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(2 * inter, k, dtype=torch.bfloat16, device="cuda") / 40
    out = fused.silu_mul_linear(x, w, inter, _kernels())
    gu = gemv.gemv(x, w, None, gemv.gemv_config(2 * inter, k), keep_splits=True)
    ref = fused.silu_and_mul(gu, inter)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert _rel(out, ref) < 1e-2


def test_one_row_linear_keeps_splits_only_when_asked() -> None:
    w = torch.randn(512, 256, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(512, dtype=torch.bfloat16, device="cuda")
    x = torch.randn(1, 256, dtype=torch.bfloat16, device="cuda")
    assert isinstance(gemv.linear(x, w, None, True, _kernels()), gemv.SplitSums)
    assert isinstance(gemv.linear(x, w, b, True, _kernels()), torch.Tensor)  # bias: summed
    assert isinstance(gemv.linear(x.repeat(2, 1), w, None, True, _kernels()), torch.Tensor)
    lm_head = torch.randn(32768, 256, dtype=torch.bfloat16, device="cuda")
    assert _rel(gemv.linear(x, lm_head, kernels=_kernels()),
                F.linear(x.float(), lm_head.float())) < 1e-2


def _mlp_chain(x: torch.Tensor, residual: torch.Tensor, w: dict[str, torch.Tensor],
               norm: RMSNorm, inter: int, k: KernelSwitches
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch-1 decode layer's matmul-and-small-op chain: every kernel depends on the one
    before, which is what programmatic dependent launch overlaps."""
    h, res = fused.add_rms_norm(gemv.linear(x, w["o"], None, True, k), residual,
                                norm.weight, norm.eps, k.pdl)
    gu = gemv.linear(h, w["gate_up"], None, True, k)
    down = gemv.linear(fused.silu_and_mul(gu, inter, k.pdl), w["down"], None, True, k)
    out, res = fused.add_rms_norm(down, res, norm.weight, norm.eps, k.pdl)
    return gemv.linear(out, w["head"], kernels=k), res


def test_dependent_launch_matches_plain_launch_in_a_graph() -> None:
    """The chain launched with PDL inside a CUDA graph (the decode path) gives the same bits
    as plain launches: every kernel waits for its predecessor before reading its output."""
    h, inter = 2048, 5632
    norm = RMSNorm(h, 1e-5).to("cuda", torch.bfloat16)
    w = {"o": torch.randn(h, h), "gate_up": torch.randn(2 * inter, h),
         "down": torch.randn(h, inter), "head": torch.randn(32768, h)}
    w = {k: (v / 40).to("cuda", torch.bfloat16) for k, v in w.items()}
    x = torch.randn(1, h, dtype=torch.bfloat16, device="cuda")
    residual = torch.randn(1, h, dtype=torch.bfloat16, device="cuda")
    ref = _mlp_chain(x, residual, w, norm, inter, _kernels(pdl=False))
    on = _kernels(pdl=True)
    if not on.pdl:
        pytest.skip("programmatic dependent launch needs compute capability 9.0 and a "
                    "Triton with gdc_wait")
    eager = _mlp_chain(x, residual, w, norm, inter, on)
    _mlp_chain(x, residual, w, norm, inter, on)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _mlp_chain(x, residual, w, norm, inter, on)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    for got in (eager, captured):
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
