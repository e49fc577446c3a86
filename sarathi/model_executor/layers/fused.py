"""Fused Triton kernels for the small per-layer ops: RMSNorm (alone or with the residual
add), rotary with the K/V cache write, SiLU-and-mul.

In eager PyTorch each of these is 5-10 elementwise kernels; at decode batch sizes every one
of them is a launch plus a pass over memory, which dominates the step after the matmuls.
Each kernel here is one pass, and rounds where the PyTorch reference rounds (to the input
dtype after each op the reference does in that dtype), so results match it closely.

The reference implementations live with the layers (layernorm.py, rotary.py, models/llama.py)
and stay the path on CPU or without Triton; tests compare the two on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, overload

import torch
import torch.nn.functional as F

from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches, triton_installed
from sarathi.model_executor.pdl import launch_args

if TYPE_CHECKING:
    from sarathi.model_executor.layers.all_reduce_norm import PeerParts


@dataclass
class SplitSums:
    """A one-row matmul's output left as float32 partial sums over K splits, ``parts``
    [splits, N]: the next fused kernel (residual add + RMSNorm, SiLU-and-mul) adds them up
    as it reads them, which saves a launch per matmul in the batch-1 decode graph."""

    parts: torch.Tensor
    dtype: torch.dtype  # what the matmul's output would be
    pdl: bool = False  # launch the summing kernel with programmatic dependent launch
    # Set where ``parts`` is this rank's share of a row-parallel matmul, in symmetric memory:
    # the sum over the group's ranks is still to be taken (by all_reduce_add_rms_norm).
    peers: PeerParts | None = None

    def total(self) -> torch.Tensor:
        """The matmul's output, [1, N] in ``dtype``."""
        _input(self)  # refuses a rank's share: only all_reduce_add_rms_norm sums over ranks
        return _sum_splits(self.parts, None, self.dtype, self.pdl)


if triton_installed():
    import triton
    import triton.language as tl

    from sarathi.model_executor.pdl import wait_prior

    @triton.jit
    def _rms_norm_kernel(
        X,
        W,
        Out,
        stride_xa,
        stride_xb,
        nb,
        n,
        rows,
        eps,
        ROWS: tl.constexpr,
        BLOCK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        wait_prior(PDL)
        # ROWS rows per program: per-head norms (Qwen3's q/k norms) have rows of 128.
        row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        a, b = (row // nb).to(tl.int64), row % nb
        cols = tl.arange(0, BLOCK)
        cmask = cols < n
        mask = (row < rows)[:, None] & cmask[None, :]
        x = tl.load(
            X + a[:, None] * stride_xa + b[:, None] * stride_xb + cols[None, :],
            mask=mask,
            other=0.0,
        ).to(tl.float32)
        r = tl.rsqrt(tl.sum(x * x, 1) / n + eps)
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
        # Reference: weight * (x * r).to(dtype), the product in the weight's dtype.
        y = (x * r[:, None]).to(X.dtype.element_ty).to(tl.float32) * w[None, :]
        out = Out + row.to(tl.int64)[:, None] * n + cols[None, :]
        tl.store(out, y.to(Out.dtype.element_ty), mask=mask)

    @triton.jit
    def load_split_sums(ptr, mask, split_stride, SPLITS: tl.constexpr, dt: tl.constexpr):
        """A row of a matmul's output: loaded, or (SPLITS > 0) summed over its float32 split
        sums and rounded to ``dt`` as the matmul's own output would be."""
        if SPLITS == 0:
            return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        acc = tl.load(ptr, mask=mask, other=0.0)
        for i in tl.static_range(1, SPLITS):
            acc += tl.load(ptr + i * split_stride, mask=mask, other=0.0)
        return acc.to(dt).to(tl.float32)

    @triton.jit
    def _silu_mul(g, u, dt: tl.constexpr):
        """silu(g) * u in ``dt``, from g and u already rounded to ``dt`` (as float32).
        Reference: silu in the activations' dtype, then the product."""
        s = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
        return (s * u).to(dt)

    @triton.jit
    def _silu_mul_kernel(
        GU, Out, stride_t, inter, SPLITS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr
    ):
        wait_prior(PDL)
        t = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inter
        base = GU + t.to(tl.int64) * stride_t
        dt = Out.dtype.element_ty
        g = load_split_sums(base + cols, mask, 2 * inter, SPLITS, dt)
        u = load_split_sums(base + inter + cols, mask, 2 * inter, SPLITS, dt)
        tl.store(Out + t.to(tl.int64) * inter + cols, _silu_mul(g, u, dt), mask=mask)

    @triton.jit
    def add_norm_store(x, r, w, ResOut, Out, offs, mask, n, eps):
        """One row's residual sum and its RMSNorm, stored at ``offs`` of ``ResOut`` and
        ``Out``. ``x`` (the layer's output, already rounded to the activations' dtype),
        ``r`` (the residual) and ``w`` (the norm's weight) come as float32. Reference: the
        residual sum in the activations' dtype, then RMSNorm of it."""
        dt = ResOut.dtype.element_ty
        s = (x + r).to(dt)
        tl.store(ResOut + offs, s, mask=mask)
        s = s.to(tl.float32)
        inv = tl.rsqrt(tl.sum(s * s, 0) / n + eps)
        y = (s * inv).to(dt).to(tl.float32) * w
        tl.store(Out + offs, y.to(Out.dtype.element_ty), mask=mask)

    @triton.jit
    def _add_rms_norm_kernel(
        X,
        R,
        W,
        Out,
        ResOut,
        stride_x,
        stride_r,
        n,
        eps,
        SPLITS: tl.constexpr,
        BLOCK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        wait_prior(PDL)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = load_split_sums(X + row * stride_x + cols, mask, n, SPLITS, ResOut.dtype.element_ty)
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        add_norm_store(x, r, w, ResOut, Out, row * n + cols, mask, n, eps)

    @triton.jit
    def _rotate(
        src,
        stride_h,
        heads,
        c,
        s,
        split_stride,
        SPLITS: tl.constexpr,
        dt: tl.constexpr,
        HALF: tl.constexpr,
        BLOCK_H: tl.constexpr,
    ):
        """Rotary of ``heads`` heads at ``src`` (one token): the two rotated halves, in
        ``dt``. ``src`` may be split sums (SPLITS > 0), added up as they load."""
        h = tl.arange(0, BLOCK_H)
        d = tl.arange(0, HALF)
        hmask = h[:, None] < heads
        ptr = src + h[:, None] * stride_h + d[None, :]
        x1 = load_split_sums(ptr, hmask, split_stride, SPLITS, dt)
        x2 = load_split_sums(ptr + HALF, hmask, split_stride, SPLITS, dt)
        # Reference: x * cos + cat(-x2, x1) * sin, each product rounded to the dtype.
        o1 = (x1 * c[None, :]).to(dt).to(tl.float32) + (-x2 * s[None, :]).to(dt).to(tl.float32)
        o2 = (x2 * c[None, :]).to(dt).to(tl.float32) + (x1 * s[None, :]).to(dt).to(tl.float32)
        return o1.to(dt), o2.to(dt)

    @triton.jit
    def _rotary_store_kernel(
        Q,
        K,
        V,
        QOut,
        KC,
        VC,
        Cos,
        Sin,
        Pos,
        RowA,
        RowB,
        sq_t,
        sq_h,
        sk_t,
        sk_h,
        sv_t,
        sv_h,
        skc_a,
        skc_b,
        skc_h,
        svc_a,
        svc_b,
        svc_h,
        stride_c,
        hq,
        hkv,
        split_stride,
        SPLITS: tl.constexpr,
        HALF: tl.constexpr,
        BLOCK_HQ: tl.constexpr,
        BLOCK_HKV: tl.constexpr,
        PDL: tl.constexpr,
    ):
        t = tl.program_id(0).to(tl.int64)
        # Positions and cache rows are step inputs and the tables are constant, none of them
        # written by the previous kernel: they load before waiting on it (PDL).
        pos = tl.load(Pos + t).to(tl.int64)
        a = tl.load(RowA + t).to(tl.int64)
        b = tl.load(RowB + t).to(tl.int64)
        d = tl.arange(0, HALF)
        dt = QOut.dtype.element_ty
        # The table repeats its first half, so one half of cos/sin serves both halves.
        c = tl.load(Cos + pos * stride_c + d).to(dt).to(tl.float32)
        s = tl.load(Sin + pos * stride_c + d).to(dt).to(tl.float32)
        wait_prior(PDL)

        hq_ = tl.arange(0, BLOCK_HQ)
        q1, q2 = _rotate(Q + t * sq_t, sq_h, hq, c, s, split_stride, SPLITS, dt, HALF, BLOCK_HQ)
        qdst = QOut + (t * hq + hq_[:, None]) * (2 * HALF) + d[None, :]
        tl.store(qdst, q1, mask=hq_[:, None] < hq)
        tl.store(qdst + HALF, q2, mask=hq_[:, None] < hq)

        hk = tl.arange(0, BLOCK_HKV)
        kmask = hk[:, None] < hkv
        k1, k2 = _rotate(K + t * sk_t, sk_h, hkv, c, s, split_stride, SPLITS, dt, HALF, BLOCK_HKV)
        kdst = KC + a * skc_a + b * skc_b + hk[:, None] * skc_h + d[None, :]
        tl.store(kdst, k1, mask=kmask)
        tl.store(kdst + HALF, k2, mask=kmask)
        full = tl.arange(0, 2 * HALF)
        vsrc = V + t * sv_t + hk[:, None] * sv_h + full[None, :]
        if SPLITS == 0:
            v = tl.load(vsrc, mask=kmask)
        else:
            v = load_split_sums(vsrc, kmask, split_stride, SPLITS, dt)
        tl.store(VC + a * svc_a + b * svc_b + hk[:, None] * svc_h + full[None, :], v, mask=kmask)

    @triton.jit
    def _gemv_kernel(
        X,
        W,
        Part,
        N,
        K,
        stride_wn,
        K_PER,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """One row times W^T: program (n, s) sums BLOCK_N outputs over K-slice s into
        Part[s, n-block] (float32)."""
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        nmask = rn < N
        k_start = split * K_PER
        k_end = tl.minimum(k_start + K_PER, K)
        rows = W + rn[:, None].to(tl.int64) * stride_wn
        # The first weight tile loads before waiting on the previous kernel (weights are
        # never written in a step), so its latency overlaps that kernel's tail.
        rk = k_start + tl.arange(0, BLOCK_K)
        kmask = rk < k_end
        w = tl.load(rows + rk[None, :], mask=nmask[:, None] & kmask[None, :], other=0.0)
        wait_prior(PDL)
        x = tl.load(X + rk, mask=kmask, other=0.0).to(tl.float32)
        acc = w.to(tl.float32) * x[None, :]
        for k0 in range(k_start + BLOCK_K, k_end, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            kmask = rk < k_end
            x = tl.load(X + rk, mask=kmask, other=0.0).to(tl.float32)
            w = tl.load(rows + rk[None, :], mask=nmask[:, None] & kmask[None, :], other=0.0)
            acc += w.to(tl.float32) * x[None, :]
        tl.store(Part + split.to(tl.int64) * N + rn, tl.sum(acc, 1), mask=nmask)

    @triton.jit
    def _gated_gemv_kernel(
        X,
        W,
        Out,
        INTER,
        K,
        stride_wn,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """silu(gate) * up for one row x through W = [gate; up] ([2 * INTER, K]): program n
        takes BLOCK_N gate rows and the matching up rows over the whole of K, so the
        product is finished in the program and needs no launch of its own."""
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < INTER
        gate = W + rn[:, None].to(tl.int64) * stride_wn
        up = gate + tl.cast(INTER, tl.int64) * stride_wn
        # The first weight tiles load before waiting on the previous kernel, as in the GEMV.
        rk = tl.arange(0, BLOCK_K)
        kmask = rk < K
        wmask = nmask[:, None] & kmask[None, :]
        wg = tl.load(gate + rk[None, :], mask=wmask, other=0.0)
        wu = tl.load(up + rk[None, :], mask=wmask, other=0.0)
        wait_prior(PDL)
        x = tl.load(X + rk, mask=kmask, other=0.0).to(tl.float32)
        acc_g = wg.to(tl.float32) * x[None, :]
        acc_u = wu.to(tl.float32) * x[None, :]
        for k0 in range(BLOCK_K, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            kmask = rk < K
            wmask = nmask[:, None] & kmask[None, :]
            x = tl.load(X + rk, mask=kmask, other=0.0).to(tl.float32)
            wg = tl.load(gate + rk[None, :], mask=wmask, other=0.0)
            wu = tl.load(up + rk[None, :], mask=wmask, other=0.0)
            acc_g += wg.to(tl.float32) * x[None, :]
            acc_u += wu.to(tl.float32) * x[None, :]
        # Gate and up round to the activations' dtype, as the matmul's output would.
        dt = Out.dtype.element_ty
        g = tl.sum(acc_g, 1).to(dt).to(tl.float32)
        u = tl.sum(acc_u, 1).to(dt).to(tl.float32)
        tl.store(Out + rn, _silu_mul(g, u, dt), mask=nmask)

    @triton.jit
    def _sum_splits_kernel(
        Part,
        Bias,
        Y,
        N,
        SPLITS: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        BLOCK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        wait_prior(PDL)
        rn = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = rn < N
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for s in tl.static_range(SPLITS):
            acc += tl.load(Part + s * N + rn, mask=mask, other=0.0)
        if HAS_BIAS:
            acc += tl.load(Bias + rn, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + rn, acc.to(Y.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, pdl: bool = False) -> torch.Tensor:
    """RMSNorm over the last dim of a 2-D or 3-D tensor whose last dim is contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    n = x.shape[-1]
    x3 = x if x.dim() == 3 else x.unsqueeze(1)
    out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rows = x3.shape[0] * x3.shape[1]
    if rows:
        block = triton.next_power_of_2(n)
        # Short rows share a program (2,048 elements a program: a 4-warp program per
        # 128-element row left most of it idle); long rows take one each, as before.
        per_program = max(1, min(16, 2048 // block))
        _rms_norm_kernel[(triton.cdiv(rows, per_program),)](
            x3,
            weight,
            out,
            x3.stride(0),
            x3.stride(1),
            x3.shape[1],
            n,
            rows,
            eps,
            ROWS=per_program,
            BLOCK=block,
            num_warps=4 if n <= 4096 else 8,
            **launch_args(pdl),
        )
    return out


def silu_and_mul(gate_up: torch.Tensor | SplitSums, inter: int, pdl: bool = False) -> torch.Tensor:
    """silu(gate_up[:, :inter]) * gate_up[:, inter:]."""
    gate_up, splits, dtype = _input(gate_up)
    t = gate_up.shape[0] if not splits else 1
    out = torch.empty(t, inter, dtype=dtype, device=gate_up.device)
    block = 1024
    if t:
        _silu_mul_kernel[(t, triton.cdiv(inter, block))](
            gate_up,
            out,
            gate_up.stride(0),
            inter,
            SPLITS=splits,
            BLOCK=block,
            num_warps=4,
            **launch_args(pdl),
        )
    return out


# Up to this many gate|up weights (2 * inter * K) one row takes the gated GEMV. Measured on
# an H200 (batch-1 decode step, same run): a rank's 11,008 x 4,096 of Llama-2-7B under TP=2
# 2.81 -> 2.70 ms; the whole 22,016 x 4,096 at TP=1 3.91 -> 4.00 ms, Llama-3-8B's
# 28,672 x 4,096 4.25 -> 4.33: there one pass over K is slower than the split-K GEMV's four
# splits by more than the silu-and-mul launch it saves.
GATED_GEMV_MAX = 64 * 2**20


def silu_mul_linear(
    x: torch.Tensor, weight: torch.Tensor, inter: int, kernels: KernelSwitches
) -> torch.Tensor:
    """silu(x @ gate^T) * (x @ up^T) for weight = [gate; up] ([2 * inter, K]), in the
    activations' dtype, with fused kernels. One row (batch-1 decode) of a gate|up matrix
    up to ``GATED_GEMV_MAX``, where ``linear`` would take the GEMV: one kernel
    (``_gated_gemv_kernel``) instead of the GEMV and a silu-and-mul launch. Otherwise the
    matmul, then ``silu_and_mul``."""
    k = weight.shape[1]
    if _takes_gemv(x, weight, True, kernels) and 2 * inter * k <= GATED_GEMV_MAX:
        if x.stride(-1) != 1:
            x = x.contiguous()
        out = torch.empty(1, inter, dtype=x.dtype, device=x.device)
        block_n = 8  # gate and up rows each: the 16-row tile of gemv_config's wide shape
        _gated_gemv_kernel[(triton.cdiv(inter, block_n),)](
            x,
            weight,
            out,
            inter,
            k,
            weight.stride(0),
            BLOCK_N=block_n,
            BLOCK_K=1024,
            num_warps=4,
            **launch_args(kernels.pdl),
        )
        return out
    gate_up = linear(x, weight, keep_splits=True, kernels=kernels)
    return silu_and_mul(gate_up, inter, kernels.pdl)


def _input(x: torch.Tensor | SplitSums) -> tuple[torch.Tensor, int, torch.dtype]:
    """(tensor for the kernel, split count or 0, the activations' dtype)."""
    if isinstance(x, SplitSums):
        if x.peers is not None:
            raise ValueError(
                "a row-parallel matmul's split sums are summed over ranks by "
                "all_reduce_add_rms_norm only"
            )
        return x.parts, x.parts.shape[0], x.dtype
    return (x if x.stride(-1) == 1 else x.contiguous()), 0, x.dtype


def _row_warps(rows: int, n: int) -> int:
    """Warps of a one-row-per-program norm. A single row (batch-1 decode, where the kernel
    also adds up the matmul's split sums) is the whole launch: sixteen warps keep more of
    its loads in flight (H200, Llama-3-8B batch 1: 4.348 -> 4.338 ms a step with the rotary
    change below, Llama-2-7B 3.96 -> 3.93; same machine, alternating)."""
    if rows == 1:
        return 16
    return 4 if n <= 4096 else 8


def add_rms_norm(
    x: torch.Tensor | SplitSums,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    pdl: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual), x + residual) in one pass over [T, H] rows."""
    x, splits, dtype = _input(x)
    if residual.stride(-1) != 1:
        residual = residual.contiguous()
    t, n = residual.shape
    out = torch.empty(t, n, dtype=torch.promote_types(dtype, weight.dtype), device=x.device)
    new_residual = torch.empty(t, n, dtype=dtype, device=x.device)
    if t:
        _add_rms_norm_kernel[(t,)](
            x,
            residual,
            weight,
            out,
            new_residual,
            x.stride(0),
            residual.stride(0),
            n,
            eps,
            SPLITS=splits,
            BLOCK=triton.next_power_of_2(n),
            num_warps=_row_warps(t, n),
            **launch_args(pdl),
        )
    return out, new_residual


def rotary_store_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    index: tuple[torch.Tensor, torch.Tensor],
    pdl: bool = False,
    sums: SplitSums | None = None,
) -> torch.Tensor:
    """Rotary on q [T, Hq, D] and k [T, Hkv, D] (last dims contiguous), with the rotated k
    and v written straight to the cache rows ``index`` names (the first two indices of a
    [A, B, Hkv, D] cache): one launch where the reference takes two rotaries and two
    index writes. Returns the rotated q as a new [T, Hq, D] tensor.

    ``sums``: q, k and v are views into the first split of these one-row split sums (the
    q|k|v matmul's), which the kernel adds up as it loads them: no summing launch."""
    t, hq, d = q.shape
    hkv = k.shape[1]
    for x in (q, k, v, k_cache, v_cache):
        if x.stride(-1) != 1:
            raise ValueError("rotary_store_kv needs the last dimension contiguous")
    splits, split_stride, dtype = 0, 0, q.dtype
    if sums is not None:
        splits, split_stride, dtype = sums.parts.shape[0], sums.parts.stride(0), sums.dtype
    out = torch.empty(t, hq, d, dtype=dtype, device=q.device)
    if t:
        rows_a, rows_b = index
        _rotary_store_kernel[(t,)](
            q,
            k,
            v,
            out,
            k_cache,
            v_cache,
            cos,
            sin,
            positions,
            rows_a,
            rows_b,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            k_cache.stride(0),
            k_cache.stride(1),
            k_cache.stride(2),
            v_cache.stride(0),
            v_cache.stride(1),
            v_cache.stride(2),
            cos.stride(0),
            hq,
            hkv,
            split_stride,
            SPLITS=splits,
            HALF=d // 2,
            BLOCK_HQ=triton.next_power_of_2(hq),
            BLOCK_HKV=triton.next_power_of_2(hkv),
            # One token (batch-1 decode) is one program: more warps keep more loads in flight.
            num_warps=8 if t == 1 else 4,
            # By default Triton contracts x1 * c + (-x2) * s into an FMA, which skips a
            # product's rounding: off, so each product rounds as the reference's does.
            enable_fp_fusion=False,
            **launch_args(pdl),
        )
    return out


@dataclass(frozen=True)
class GemvConfig:
    """Output rows per program, K elements per loop step, K splits, warps per program."""

    block_n: int
    block_k: int
    splits: int
    num_warps: int = 4


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    config: GemvConfig,
    keep_splits: bool = False,
    pdl: bool = False,
    peers: PeerParts | None = None,
) -> torch.Tensor | SplitSums:
    """F.linear for one row x [1, K] (weight [N, K], K contiguous): split over K so every SM
    streams weights, then one pass sums the splits (in float32) and adds the bias; or, with
    ``keep_splits`` and no bias, the split sums for the next fused kernel to add up. With
    ``peers`` as well, the split sums go to the group's symmetric buffer (where they fit)
    for all_reduce_add_rms_norm to sum over the ranks."""
    n, k = weight.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    k_per = triton.cdiv(triton.cdiv(k, config.splits), config.block_k) * config.block_k
    splits = triton.cdiv(k, k_per)
    shared = peers.parts(splits, n) if peers is not None and keep_splits and bias is None else None
    part = (
        shared
        if shared is not None
        else torch.empty(splits, n, dtype=torch.float32, device=x.device)
    )
    _gemv_kernel[(triton.cdiv(n, config.block_n), splits)](
        x,
        weight,
        part,
        n,
        k,
        weight.stride(0),
        k_per,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        num_warps=config.num_warps,
        **launch_args(pdl),
    )
    if keep_splits and bias is None:
        return SplitSums(part, x.dtype, pdl, peers if shared is not None else None)
    return _sum_splits(part, bias, x.dtype, pdl)


def _sum_splits(
    part: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, pdl: bool
) -> torch.Tensor:
    n = part.shape[1]
    y = torch.empty(1, n, dtype=dtype, device=part.device)
    _sum_splits_kernel[(triton.cdiv(n, 1024),)](
        part,
        bias if bias is not None else part,
        y,
        n,
        SPLITS=part.shape[0],
        HAS_BIAS=bias is not None,
        BLOCK=1024,
        num_warps=4,
        **launch_args(pdl),
    )
    return y


# The most K splits gemv_config asks for: what a one-row matmul's split sums can take.
MAX_SPLITS = 4


def gemv_config(n: int, k: int) -> GemvConfig:
    """Tile shape and split count for an [n, k] weight, from the sweeps in
    benchmarks/small_m_linear.py (H200). Large matrices (LM head, gate/up) take 16 rows and
    1,024-wide K steps split four ways (in the batch-1 step: Llama-3-8B 4.39 -> 4.37 ms,
    Llama-2-7B 3.98 -> 3.93; the H100's sweep had picked 32 rows, 512-wide steps, two
    splits), and so do tall ones from 44M elements, a rank's gate/up or LM head under
    TP=2 (Llama-2-7B: 27.8 -> 26.9 us, 36.9 -> 36.0). The rest take narrow tiles, split
    two ways where a matrix of 16M elements or more is 1.5x as tall as wide (q|k|v of
    Llama-3-8B, or of Llama-2-7B under TP=2: 17.7 -> 16.6 us), four ways otherwise."""
    if n * k >= 64 * 2**20 or (n * k >= 44 * 2**20 and n >= 2 * k):
        return GemvConfig(16, 1024, MAX_SPLITS, 4)
    tall = n * k >= 16 * 2**20 and 2 * n >= 3 * k
    return GemvConfig(16, 128, 2 if tall else MAX_SPLITS, 8)


@overload
def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    keep_splits: Literal[False] = False,
    kernels: KernelSwitches = REFERENCE,
    peers: PeerParts | None = None,
) -> torch.Tensor: ...


@overload
def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    keep_splits: bool = False,
    kernels: KernelSwitches = REFERENCE,
    peers: PeerParts | None = None,
) -> torch.Tensor | SplitSums: ...


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    keep_splits: bool = False,
    kernels: KernelSwitches = REFERENCE,
    peers: PeerParts | None = None,
) -> torch.Tensor | SplitSums:
    """F.linear, with one-row inputs (batch-1 decode) on the split-K GEMV where it was faster
    (H100, benchmarks/results/README.md): with programmatic dependent launch, every one-row
    matmul, since the GEMV's weights stream while the kernel before it finishes and cuBLAS
    cannot overlap that way; without it, only where the next fused kernel adds up the
    splits (``keep_splits``) and for vocabulary-sized weights (the LM head), as cuBLAS was
    2-4% faster than the GEMV plus its summing launch on q|k|v. ``kernels.gemv`` "0" keeps
    cuBLAS everywhere, "all" the GEMV for every one-row matmul. ``peers``: see ``gemv``."""
    if _takes_gemv(x, weight, keep_splits, kernels):
        config = gemv_config(*weight.shape)
        return gemv(x, weight, bias, config, keep_splits, kernels.pdl, peers)
    return F.linear(x, weight, bias)


def _takes_gemv(
    x: torch.Tensor, weight: torch.Tensor, keep_splits: bool, kernels: KernelSwitches
) -> bool:
    """Whether ``linear`` runs this matmul on the one-row GEMV (see ``linear``)."""
    mode = kernels.gemv
    return (
        kernels.fused
        and x.dim() == 2
        and x.shape[0] == 1
        and mode != "0"
        and (keep_splits or weight.shape[0] >= 32768 or mode == "all" or kernels.pdl)
    )
