"""Fused Triton kernels for the small per-layer ops: RMSNorm (alone or with the residual
add), rotary with the K/V cache write, SiLU-and-mul (after the gate|up matmul, or with it).
Each takes a one-row matmul's split sums (``gemv.SplitSums``) as input too.

In eager PyTorch each of these is 5-10 elementwise kernels; at decode batch sizes every one
of them is a launch plus a pass over memory, which dominates the step after the matmuls.
Each kernel here is one pass, and rounds where the PyTorch reference rounds (to the input
dtype after each op the reference does in that dtype), so results match it closely.

The reference implementations live with the layers (layernorm.py, rotary.py, models/llama.py)
and stay the path on CPU or without Triton; tests compare the two on the GPU.
"""

from __future__ import annotations

import torch

from sarathi.model_executor.kernel_switches import KernelSwitches, triton_installed
from sarathi.model_executor.layers.gemv import (
    GATED_GEMV_MAX,
    SplitSums,
    gated_gemv,
    kernel_input,
    linear,
    takes_gemv,
)
from sarathi.model_executor.pdl import launch_args

if triton_installed():
    import triton
    import triton.language as tl

    from sarathi.model_executor.layers.gemv import load_split_sums, silu_mul
    from sarathi.model_executor.pdl import release_then_wait

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
        release_then_wait(PDL)
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
    def _silu_mul_kernel(
        GU, Out, stride_t, inter, SPLITS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr
    ):
        release_then_wait(PDL)
        t = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inter
        base = GU + t.to(tl.int64) * stride_t
        dt = Out.dtype.element_ty
        g = load_split_sums(base + cols, mask, 2 * inter, SPLITS, dt)
        u = load_split_sums(base + inter + cols, mask, 2 * inter, SPLITS, dt)
        tl.store(Out + t.to(tl.int64) * inter + cols, silu_mul(g, u, dt), mask=mask)

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
        release_then_wait(PDL)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = load_split_sums(X + row * stride_x + cols, mask, n, SPLITS, ResOut.dtype.element_ty)
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        add_norm_store(x, r, w, ResOut, Out, row * n + cols, mask, n, eps)

    @triton.jit
    def rotate(x, xp, c, s, dt: tl.constexpr):
        """x * cos + xp * sin in ``dt`` with the reference's roundings: each product rounded
        to ``dt``, then the sum (``xp``: x's partner in the other half of the head, negated
        for the first half). The rotary kernel and the batch-1 decode kernel share it."""
        return ((x * c).to(dt).to(tl.float32) + (xp * s).to(dt).to(tl.float32)).to(dt)

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
        # Reference: x * cos + cat(-x2, x1) * sin.
        c, s = c[None, :], s[None, :]
        return rotate(x1, -x2, c, s, dt), rotate(x2, x1, c, s, dt)

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
        release_then_wait(PDL)

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
    gate_up, splits, dtype = kernel_input(gate_up)
    t = gate_up.shape[0] if not splits else 1
    out = torch.empty(t, inter, dtype=dtype, device=gate_up.device)
    # One row (batch-1 decode) is the whole launch: narrow programs spread its split-sum
    # loads over more SMs (H200, with the norm's 32 warps below: Llama-2-7B 3.78 -> 3.72 ms
    # a step, Llama-3-8B 4.14 -> 4.06; same machine, alternating).
    block = 256 if t == 1 else 1024
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


def silu_mul_linear(
    x: torch.Tensor, weight: torch.Tensor, inter: int, kernels: KernelSwitches
) -> torch.Tensor:
    """silu(x @ gate^T) * (x @ up^T) for weight = [gate; up] ([2 * inter, K]), in the
    activations' dtype, with fused kernels. One row (batch-1 decode) of a gate|up matrix
    up to ``GATED_GEMV_MAX``, where ``linear`` would take the GEMV: one kernel
    (``gemv.gated_gemv``) instead of the GEMV and a silu-and-mul launch. Otherwise the
    matmul, then ``silu_and_mul``."""
    if takes_gemv(x, weight, True, kernels) and weight.numel() <= GATED_GEMV_MAX:
        return gated_gemv(x, weight, inter, kernels.pdl)
    gate_up = linear(x, weight, keep_splits=True, kernels=kernels)
    return silu_and_mul(gate_up, inter, kernels.pdl)


def _row_warps(rows: int, n: int) -> int:
    """Warps of a one-row-per-program norm. A single row (batch-1 decode, where the kernel
    also adds up the matmul's split sums) is the whole launch: 32 warps keep more of its
    loads in flight (H200, batch 1, same machine, alternating: 4 -> 16 warps Llama-3-8B
    4.348 -> 4.338 ms a step; 16 -> 32 with the short kernels releasing first, 3.785 ->
    3.777 ms Llama-2-7B, 4.137 -> 4.125). Rows narrower than those models' 4,096 keep 16:
    32 warps were not measured there, and a thread would hold under four elements."""
    if rows == 1:
        return 32 if n >= 4096 else 16
    return 4 if n <= 4096 else 8


def add_rms_norm(
    x: torch.Tensor | SplitSums,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    pdl: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual), x + residual) in one pass over [T, H] rows."""
    x, splits, dtype = kernel_input(x)
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
