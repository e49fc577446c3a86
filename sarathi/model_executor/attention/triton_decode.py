"""Triton decode attention (flash-decoding) over the vattention slot layout
(``triton_common.py``).

One program per (sequence, KV head, split of the context). The program loads each
key/value block once for all query heads of its GQA group (padded to the 16 rows a
tensor-core dot needs), keeps a running max/sum, and writes a partial result; a second
kernel merges the splits. Splitting keeps the chip busy at batch 1.

At batch 1 the decode kernel launches with programmatic dependent launch (``pdl.py``) and
loads its first key/value block, all but the newest position, before waiting on the rotary
kernel that writes that position.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sarathi.model_executor.attention.launch import DecodeLaunch, decode_launch, decode_splits
from sarathi.model_executor.attention.metadata import DecodeRope
from sarathi.model_executor.attention.triton_common import (
    LOG2E,
    NEG_BIG,
    attend,
    attend_block,
    check_layout,
    kv_rows,
    load_kv,
)
from sarathi.model_executor.layers.fused import rotate
from sarathi.model_executor.layers.gemv import load_split_sums
from sarathi.model_executor.pdl import launch_args, release_then_wait, wait_prior


@triton.jit
def _rope(base, d, mask, c, s, split_stride, SPLITS: tl.constexpr, dt: tl.constexpr,
          HEAD_DIM: tl.constexpr):  # fmt: skip
    """Rotary of the head(s) at ``base`` (offsets ``d`` across the head, rows broadcast from
    ``base``), read as split sums where SPLITS > 0, in ``dt``: the rotary kernel's
    roundings (``fused.rotate``), with each element's partner in the other half read
    directly instead of the two halves apart."""
    half: tl.constexpr = HEAD_DIM // 2
    partner = (d + half) % HEAD_DIM
    sign = tl.where(d < half, -1.0, 1.0)
    x = load_split_sums(base + d, mask, split_stride, SPLITS, dt)
    xp = load_split_sums(base + partner, mask, split_stride, SPLITS, dt)
    return rotate(x, sign * xp, c, s, dt)


@triton.jit
def _splits(n, window, num_splits, BLOCK_N: tl.constexpr, MIN_BLOCKS: tl.constexpr,
            HAS_WINDOW: tl.constexpr):  # fmt: skip
    """How a sequence of ``n`` keys is split: its first key ``lo`` (the window's), the first
    split's start ``base`` (the block that holds lo), the keys a split takes (whole blocks,
    at least MIN_BLOCKS, sized from the sequence's own length so that the splits share its
    keys at any context) and how many splits hold keys (at least one). The splits past
    those are empty: the decode kernel writes nothing for them and the merge leaves them
    out."""
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(n - window, 0)
    base = (lo // BLOCK_N) * BLOCK_N
    size = tl.maximum(tl.cdiv(tl.cdiv(n - base, num_splits), BLOCK_N), MIN_BLOCKS) * BLOCK_N
    used = tl.maximum(tl.minimum(tl.cdiv(n - base, size), num_splits), 1)
    return lo, base, size, used


@triton.jit
def _decode_kernel(
    Q,
    KNew,
    VNew,
    Cos,
    Sin,
    Pos,
    K,
    V,
    Slots,
    Lens,
    Count,
    Out,
    PartO,
    PartM,
    PartL,
    BlockTable,
    stride_bt,
    stride_qb,
    stride_qh,
    stride_nb,
    stride_nh,
    stride_c,
    rope_split_stride,
    stride_ks,
    stride_kp,
    stride_kh,
    stride_vs,
    stride_vp,
    stride_vh,
    stride_ob,
    stride_oh,
    num_splits,
    scale_log2,
    window,
    GROUP: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MIN_BLOCKS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    SPLIT: tl.constexpr,
    PAGED: tl.constexpr,
    PAGE: tl.constexpr,
    COUNTED: tl.constexpr,
    ROPE: tl.constexpr,
    ROPE_SPLITS: tl.constexpr,
    PDL: tl.constexpr,
    BEHIND: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    if BEHIND:  # noqa: SIM102 - constexpr guard
        # Launched behind a kernel that released it early and writes nothing read here: one
        # program waits for that kernel, so this one completes after it (see decode_attention).
        if (b == 0) & (kvh == 0) & (s == 0):
            tl.extra.cuda.gdc_wait()
    # A mixed-step graph: rows past the step's decodes are prefill rows. COUNTED is a constexpr,
    # kept a separate `if` so the load is never traced without it (older Triton releases trace
    # both operands of an `and`).
    if COUNTED:  # noqa: SIM102 - constexpr guard, see above
        if b >= tl.load(Count):
            return
    # Before waiting on the previous kernel (PDL): the slot, length and block table come from
    # the step's inputs, written before that kernel started, and of the cache the previous
    # kernel (rotary + K/V write) writes only each sequence's newest position. So the first
    # key/value block loads now, without that position, and overlaps the previous kernel.
    n = tl.load(Lens + b).to(tl.int32)
    lo, base, size, used = _splits(n, window, num_splits, BLOCK_N, MIN_BLOCKS, HAS_WINDOW)
    # An empty split (a context shorter than the graph's splits cover) writes nothing.
    if s >= used:
        return
    # int64: a mega-layout slot offset overflows 32 bits on real model shapes.
    slot = tl.load(Slots + b).to(tl.int64)
    start = tl.maximum(base + s * size, lo)
    end = tl.minimum(base + (s + 1) * size, n)
    k_base = K + kvh * stride_kh
    v_base = V + kvh * stride_vh
    pos = start + tl.arange(0, BLOCK_N)
    pmask = pos < end
    k, v = load_kv(
        k_base,
        v_base,
        BlockTable,
        stride_bt,
        slot,
        pos,
        pmask & (pos < n - 1),
        stride_ks,
        stride_kp,
        stride_vs,
        stride_vp,
        HEAD_DIM,
        PAGED,
        PAGE,
    )
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, HEAD_DIM)
    gmask = g < GROUP
    qh = kvh * GROUP + g
    newest = pmask & (pos == n - 1)
    if ROPE:
        dt = Out.dtype.element_ty
        # The position and the cos/sin tables are step inputs and constants (before the
        # wait); the table repeats its first half, as the rotary kernel reads it.
        p = tl.load(Pos + b).to(tl.int64)
        c = tl.load(Cos + p * stride_c + d).to(dt).to(tl.float32)
        sn = tl.load(Sin + p * stride_c + d).to(dt).to(tl.float32)
        wait_prior(PDL)
        qp = Q + b * stride_qb + qh[:, None] * stride_qh
        q = _rope(qp, d, gmask[:, None], c[None, :], sn[None, :], rope_split_stride,
                  ROPE_SPLITS, dt, HEAD_DIM)  # fmt: skip
        kp = KNew + b * stride_nb + kvh * stride_nh
        k_new = _rope(kp, d, d < HEAD_DIM, c, sn, rope_split_stride, ROPE_SPLITS, dt, HEAD_DIM)
        v_new = load_split_sums(
            VNew + b * stride_nb + kvh * stride_nh + d, d < HEAD_DIM, rope_split_stride,
            ROPE_SPLITS, dt,
        ).to(dt)  # fmt: skip
        # The program whose range holds the newest position writes its K/V to the cache;
        # the barrier makes the write visible to the block loads below, of any thread.
        owns = (n - 1 >= start) & (n - 1 < end)
        kr = kv_rows(BlockTable, stride_bt, slot, n - 1, owns, stride_ks, stride_kp, PAGED, PAGE)
        vr = kv_rows(BlockTable, stride_bt, slot, n - 1, owns, stride_vs, stride_vp, PAGED, PAGE)
        tl.store(k_base + kr + d, k_new, mask=(d < HEAD_DIM) & owns)
        tl.store(v_base + vr + d, v_new, mask=(d < HEAD_DIM) & owns)
        tl.debug_barrier()
        k = tl.where(newest[:, None], k_new[None, :], k)
        v = tl.where(newest[:, None], v_new[None, :], v)
    else:
        wait_prior(PDL)
        k_new, v_new = load_kv(
            k_base,
            v_base,
            BlockTable,
            stride_bt,
            slot,
            pos,
            newest,
            stride_ks,
            stride_kp,
            stride_vs,
            stride_vp,
            HEAD_DIM,
            PAGED,
            PAGE,
        )
        k = tl.where(newest[:, None], k_new, k)
        v = tl.where(newest[:, None], v_new, v)
        q = tl.load(
            Q + b * stride_qb + qh[:, None] * stride_qh + d[None, :],
            mask=gmask[:, None],
            other=0.0,
        )

    m_i = tl.full([BLOCK_G], NEG_BIG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    m_i, l_i, acc = attend(q, k, v, pmask[None, :], scale_log2, m_i, l_i, acc, True)
    for p0 in range(start + BLOCK_N, end, BLOCK_N):
        pos = p0 + tl.arange(0, BLOCK_N)
        pmask = pos < end
        m_i, l_i, acc = attend_block(
            q,
            k_base,
            v_base,
            BlockTable,
            stride_bt,
            slot,
            pos,
            pmask,
            pmask[None, :],
            stride_ks,
            stride_kp,
            stride_vs,
            stride_vp,
            scale_log2,
            m_i,
            l_i,
            acc,
            HEAD_DIM,
            PAGED,
            PAGE,
            True,
        )

    if SPLIT:
        row = (b * (tl.num_programs(1) * GROUP) + qh) * num_splits + s
        tl.store(PartM + row, m_i, mask=gmask)
        tl.store(PartL + row, l_i, mask=gmask)
        tl.store(PartO + row[:, None] * HEAD_DIM + d[None, :], acc, mask=gmask[:, None])
    else:
        out = acc / l_i[:, None]
        tl.store(
            Out + b * stride_ob + qh[:, None] * stride_oh + d[None, :],
            out.to(Out.dtype.element_ty),
            mask=gmask[:, None],
        )


@triton.jit
def _merge_kernel(
    PartO,
    PartM,
    PartL,
    Lens,
    Count,
    Out,
    stride_ob,
    stride_oh,
    num_heads,
    num_splits,
    window,
    BLOCK_S: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MIN_BLOCKS: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    COUNTED: tl.constexpr,
    PDL: tl.constexpr,
):
    release_then_wait(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    if COUNTED:  # noqa: SIM102 - constexpr guard, as in _decode_kernel
        if b >= tl.load(Count):
            return
    n = tl.load(Lens + b).to(tl.int32)
    _, _, _, used = _splits(n, window, num_splits, BLOCK_N, MIN_BLOCKS, HAS_WINDOW)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, HEAD_DIM)
    smask = s < used
    row = (b * num_heads + h) * num_splits + s
    m = tl.load(PartM + row, mask=smask, other=NEG_BIG)
    l_s = tl.load(PartL + row, mask=smask, other=0.0)
    m_max = tl.max(m, 0)
    w = tl.exp2(m - m_max)
    w = tl.where(smask, w, 0.0)
    o = tl.load(PartO + row[:, None] * HEAD_DIM + d[None, :], mask=smask[:, None], other=0.0)
    out = tl.sum(o * w[:, None], 0) / tl.sum(l_s * w, 0)
    tl.store(Out + b * stride_ob + h * stride_oh + d, out.to(Out.dtype.element_ty))


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    lens: torch.Tensor,
    scale: float,
    window: int | None,
    out: torch.Tensor,
    num_sms: int,
    splits: int | None = None,
    block_table: torch.Tensor | None = None,
    count: torch.Tensor | None = None,
    pdl: bool = False,
    launch: DecodeLaunch | None = None,
    rope: DecodeRope | None = None,
    behind: bool = False,
) -> torch.Tensor:
    """q: [B, Hq, D]; out: [B, Hq, D] (written). With ``rope`` the kernel rotates q and
    the new key itself and writes the new K/V to the cache (see ``DecodeRope``); without
    it they are in the cache already and q is rotated. ``splits``: how many parts each
    sequence's keys take (default ``decode_splits``; the kernel sizes them from the
    sequence's length, so any count is valid at any context). With
    ``block_table`` ([slots, blocks per slot] int32) the caches are paged pools. With
    ``count`` (a one-element device tensor) only the first ``count`` rows are decodes: the
    others are left alone. ``launch``: the launch shape (default: ``decode_launch``); a
    graph passes both, from ``FixedLaunch``.
    Two pipeline stages, not three: on an H100 the third stage's shared memory cost the
    contiguous (vattention) path 8% at 16K context by lowering occupancy, while the paged
    path did not move (``benchmarks/results/EXPERIMENTS.md``).
    ``behind``: launched right after ``prefill_attention(..., release=True)`` in a mixed
    step, with programmatic dependent launch: the prefill kernel lets it launch once all of
    its programs have started, so decode programs take the SMs that the prefill's last
    programs leave free; one decode program waits for the prefill kernel, so the kernels
    after this one see both outputs. Needs PDL (Hopper and later)."""
    check_layout(q, k_cache, v_cache)
    b, hq, d = q.shape
    hkv = k_cache.shape[2]
    group = hq // hkv
    launch = launch or decode_launch(b, hkv, group, num_sms)
    block_n = launch.block_n
    splits = splits or decode_splits(b, hkv, num_sms)
    block_g = max(16, triton.next_power_of_2(group))
    scale_log2 = scale * LOG2E
    win = window or 0
    if splits > 1:
        part_o = torch.empty(b * hq * splits, d, dtype=torch.float32, device=q.device)
        part_m = torch.empty(b * hq * splits, dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
    else:
        part_o = part_m = part_l = out  # unused
    paged = block_table is not None
    bt = slots if block_table is None else block_table  # slots: unused when not paged
    # Programmatic dependent launch at batch 1 only, where it was measured faster (H100,
    # Llama-2-7B ctx 4096: 5.75 vs 5.85 ms steps). At batch 16 and 32 it was slower:
    # batch-16 steps +2%, batch-32 paged decode kernels up to +18% (results/EXPERIMENTS.md).
    pdl_args = launch_args(pdl and b == 1)
    # Behind the prefill kernel: launched with PDL, its programs not waiting (see BEHIND).
    decode_args = {"PDL": False, "launch_pdl": True} if behind else pdl_args
    counted = count is not None
    cnt = count if counted else lens  # unused when not counted
    r = rope
    if r is not None and (
        r.k.stride(-1) != 1 or r.v.stride(-1) != 1 or r.k.stride() != r.v.stride()
    ):
        raise ValueError("DecodeRope needs k and v alike, the head dimension contiguous")
    _decode_kernel[(b, hkv, splits)](
        q,
        r.k if r else q,  # the rest of these are unused without rope
        r.v if r else q,
        r.cos if r else q,
        r.sin if r else q,
        r.positions if r else lens,
        k_cache,
        v_cache,
        slots,
        lens,
        cnt,
        out,
        part_o,
        part_m,
        part_l,
        bt,
        bt.stride(0),
        q.stride(0),
        q.stride(1),
        r.k.stride(0) if r else 0,
        r.k.stride(1) if r else 0,
        r.cos.stride(0) if r else 0,
        r.split_stride if r else 0,
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        out.stride(0),
        out.stride(1),
        splits,
        scale_log2,
        win,
        GROUP=group,
        BLOCK_G=block_g,
        BLOCK_N=block_n,
        MIN_BLOCKS=launch.min_blocks,
        HEAD_DIM=d,
        HAS_WINDOW=window is not None,
        SPLIT=splits > 1,
        PAGED=paged,
        PAGE=k_cache.shape[1] if paged else 1,
        COUNTED=counted,
        ROPE=r is not None,
        ROPE_SPLITS=r.splits if r else 0,
        num_warps=launch.warps,
        num_stages=launch.stages,
        # Triton contracts a product and a sum into one FMA by default, which skips the
        # product's rounding: the rotary inside (ROPE) would then not round as the rotary
        # kernel does. Off for both forms, so that their attention arithmetic is the same.
        enable_fp_fusion=False,
        BEHIND=behind,
        **decode_args,
    )
    if splits > 1:
        _merge_kernel[(b, hq)](
            part_o,
            part_m,
            part_l,
            lens,
            cnt,
            out,
            out.stride(0),
            out.stride(1),
            hq,
            splits,
            win,
            BLOCK_S=triton.next_power_of_2(splits),
            HEAD_DIM=d,
            BLOCK_N=block_n,
            MIN_BLOCKS=launch.min_blocks,
            HAS_WINDOW=window is not None,
            COUNTED=counted,
            num_warps=4,
            **pdl_args,
        )
    return out
