"""What the Triton attention kernels share: the vattention slot layout and the paged
baseline's address translation, the online-softmax step, and the checks of their inputs.

K and V are ``[slots, max_len, kv_heads, head_dim]`` tensors with any strides (the
``per_layer`` layout is contiguous; a ``mega`` layer is a strided view), so a sequence's
keys are one strided run of memory and the kernels need no block table.

The same kernels read the ``paged`` baseline (``PAGED=True``): K and V are then pools
``[num_blocks, block_size, kv_heads, head_dim]`` and a slot's token ``p`` lives in block
``BlockTable[slot, p // block_size]`` at row ``p % block_size``. Sharing everything but the
address translation makes the vattention-vs-paged comparison measure exactly that.

Softmax runs in base 2 (``exp2``) with the scale folded into log2(e). The running max
starts at a large finite negative value instead of -inf, so rows whose first blocks are all
masked (sliding window, empty splits) never compute ``-inf - -inf``.

The kernels: ``triton_decode.py`` (one new token per sequence) and ``triton_prefill.py``
(chunks of prompt tokens).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def kv_rows(
    BlockTable,
    stride_bt,
    slot,
    pos,
    pmask,
    stride_s,
    stride_p,
    PAGED: tl.constexpr,
    PAGE: tl.constexpr,
):
    """Element offsets of positions ``pos`` of ``slot`` in a K or V tensor (int64)."""
    if PAGED:
        blk = tl.load(BlockTable + slot * stride_bt + pos // PAGE, mask=pmask, other=0)
        return blk.to(tl.int64) * stride_s + (pos % PAGE).to(tl.int64) * stride_p
    return slot * stride_s + pos.to(tl.int64) * stride_p


@triton.jit
def load_kv(
    k_base,
    v_base,
    BlockTable,
    stride_bt,
    slot,
    pos,
    pmask,
    stride_ks,
    stride_kp,
    stride_vs,
    stride_vp,
    HEAD_DIM: tl.constexpr,
    PAGED: tl.constexpr,
    PAGE: tl.constexpr,
):
    """Keys and values at positions ``pos`` (zeros where ``pmask`` is false)."""
    d = tl.arange(0, HEAD_DIM)
    k_rows = kv_rows(BlockTable, stride_bt, slot, pos, pmask, stride_ks, stride_kp, PAGED, PAGE)
    k = tl.load(k_base + k_rows[:, None] + d[None, :], mask=pmask[:, None], other=0.0)
    v_rows = kv_rows(BlockTable, stride_bt, slot, pos, pmask, stride_vs, stride_vp, PAGED, PAGE)
    v = tl.load(v_base + v_rows[:, None] + d[None, :], mask=pmask[:, None], other=0.0)
    return k, v


@triton.jit
def attend(q, k, v, keep, scale_log2, m_i, l_i, acc, MASKED: tl.constexpr):
    """One block of keys ``k``/values ``v`` for the query rows ``q``, online softmax in base
    2: scores where ``keep`` is false are dropped (unless not ``MASKED``: every query sees
    every key). Returns the updated running max, sum and output accumulator."""
    qk = tl.dot(q, tl.trans(k))
    if MASKED:
        qk = tl.where(keep, qk, float("-inf"))
    # The scale (> 0) goes into the row max and the exponent's argument, a multiply-add per
    # score, and the product with v accumulates into the rescaled acc inside the dot: both
    # save a pass over a register tile per block.
    m_new = tl.maximum(m_i, tl.max(qk, 1) * scale_log2)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk * scale_log2 - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i, acc


@triton.jit
def attend_block(
    q,
    k_base,
    v_base,
    BlockTable,
    stride_bt,
    slot,
    pos,
    pmask,
    keep,
    stride_ks,
    stride_kp,
    stride_vs,
    stride_vp,
    scale_log2,
    m_i,
    l_i,
    acc,
    HEAD_DIM: tl.constexpr,
    PAGED: tl.constexpr,
    PAGE: tl.constexpr,
    MASKED: tl.constexpr,
):
    """``attend`` over the block of keys at positions ``pos`` (``pmask``: in range)."""
    k, v = load_kv(
        k_base,
        v_base,
        BlockTable,
        stride_bt,
        slot,
        pos,
        pmask,
        stride_ks,
        stride_kp,
        stride_vs,
        stride_vp,
        HEAD_DIM,
        PAGED,
        PAGE,
    )
    return attend(q, k, v, keep, scale_log2, m_i, l_i, acc, MASKED)


def check_layout(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    """Refuse inputs the kernels cannot read: a strided head dimension, or a head size
    that is not a power of two of at least 16."""
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("the head dimension must be contiguous")
    d = q.shape[-1]
    if d & (d - 1) or d < 16:
        raise ValueError(f"head_dim {d} is not a power of two >= 16")
