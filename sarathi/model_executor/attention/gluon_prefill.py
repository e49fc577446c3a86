"""Gluon prefill attention for Hopper: producer and consumer warps over the vattention slot
layout (``triton_common.py``).

The Triton kernel (``triton_prefill.py``) runs one warp group per program, which loads its
keys, multiplies, takes the softmax and multiplies again in one chain; Triton 3.6 cannot split
that chain over warps on Hopper. Here a program takes ``BLOCK_M`` = 128 tokens of a chunk for
one query head, in three partitions of its warps:

- a loader warp copies the slot's key and value blocks with the TMA unit into a ring of
  ``STAGES`` shared-memory buffers, each guarded by ``ready`` and ``free`` barriers;
- two consumer warp groups take 64 rows each (both read each block once loaded): while one
  runs its softmax the tensor cores serve the other, and each issues the scores of its next
  block before it multiplies the probabilities of the last one by their values, so its own
  softmax overlaps its own matrix multiplies too.

Same numerics as the Triton kernel (softmax in base 2, a finite running-max start, float32
accumulators), same inputs; causal with the chunk's offset; no sliding window and no paged
pool (those stay on the Triton kernel).
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from sarathi.model_executor.attention.launch import WARP_PREFILL_BLOCK_M
from sarathi.model_executor.attention.triton_common import LOG2E, NEG_BIG, check_layout
from sarathi.model_executor.attention.triton_prefill import (
    DescriptorScratch,
    tile_grid,
    use_descriptor_scratch,
)


@gluon.jit
def _loader(
    K,
    V,
    slot,
    kvh,
    hi,
    nb,
    stride_ks,
    stride_kp,
    stride_kh,
    stride_vs,
    stride_vp,
    stride_vh,
    k_smem,
    v_smem,
    k_ready,
    v_ready,
    free,
):
    """Copy key and value blocks ``0 .. nb - 1`` of the slot's ``hi`` keys into the ring;
    rows past ``hi`` read as zeros."""
    STAGES: gl.constexpr = k_smem.shape[0]
    BLOCK_N: gl.constexpr = k_smem.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.shape[2]
    layout: gl.constexpr = k_smem.layout
    block: gl.constexpr = [BLOCK_N, HEAD_DIM]
    k_base = K + slot * stride_ks + kvh * stride_kh
    v_base = V + slot * stride_vs + kvh * stride_vh
    k_desc = tma.make_tensor_descriptor(k_base, [hi, HEAD_DIM], [stride_kp, 1], block, layout)
    v_desc = tma.make_tensor_descriptor(v_base, [hi, HEAD_DIM], [stride_vp, 1], block, layout)
    nbytes: gl.constexpr = BLOCK_N * HEAD_DIM * k_smem.dtype.primitive_bitwidth // 8
    for j in range(nb):
        s = j % STAGES
        # A fresh barrier's phase before the first counts as done: the first lap waits on nothing.
        mbarrier.wait(free.index(s), ((j // STAGES) & 1) ^ 1)
        mbarrier.expect(k_ready.index(s), nbytes)
        tma.async_copy_global_to_shared(k_desc, [j * BLOCK_N, 0], k_ready.index(s), k_smem.index(s))
        mbarrier.expect(v_ready.index(s), nbytes)
        tma.async_copy_global_to_shared(v_desc, [j * BLOCK_N, 0], v_ready.index(s), v_smem.index(s))


@gluon.jit
def _softmax_block(
    s, j, full, qpos, m_i, l_i, scale_log2, BLOCK_N: gl.constexpr, layout: gl.constexpr
):
    """Online softmax of one block of scores (base 2): its probabilities, the factor that
    rescales what was accumulated before, and the new running max and sum. Blocks from
    ``full`` on may hold keys past a row's position: masked."""
    if j >= full:
        pos = j * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, layout))
        s = gl.where(pos[None, :] <= qpos[:, None], s, NEG_BIG)
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * scale_log2)
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s * scale_log2 - m_new[:, None])
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


@gluon.jit
def _consumer(
    Q,
    Out,
    h,
    off,
    start,
    n,
    row0,
    nb,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    scale_log2,
    q_smem,
    k_smem,
    v_smem,
    k_ready,
    v_ready,
    free,
):
    """One warp group: chunk rows ``row0 .. row0 + 63`` over the blocks it needs of the
    ``nb`` the loader brings, then releases the rest unread (the ring turns for both groups)."""
    ROWS: gl.constexpr = q_smem.shape[0]
    STAGES: gl.constexpr = k_smem.shape[0]
    BLOCK_N: gl.constexpr = k_smem.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.shape[2]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    load_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    dtype: gl.constexpr = Q.dtype.element_ty

    # This group's query rows into shared memory, the scores' left operand.
    r = row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, load_layout))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, load_layout))
    q = gl.load(
        Q + (off + r[:, None]) * stride_qt + h * stride_qh + d[None, :],
        mask=(r < n)[:, None],
        other=0.0,
    )
    q_smem.store(q)
    fence_async_shared()

    # Keys this group sees: up to its last row's position. Blocks before ``full`` are seen
    # whole by every row (no mask).
    rows_live = row0 < n
    hi = gl.minimum(start + row0 + ROWS, start + n)
    nb_w = gl.where(rows_live, gl.cdiv(hi, BLOCK_N), 0)
    full = (start + row0 + 1) // BLOCK_N
    qpos = start + row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, s_layout))

    m_i = gl.full([ROWS], NEG_BIG, gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([ROWS], gl.float32, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)

    if nb_w > 0:
        # Block 0: scores and softmax; its values wait for the next block's scores.
        mbarrier.wait(k_ready.index(0), 0)
        s = warpgroup_mma(
            q_smem, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True
        )
        s = warpgroup_mma_wait(0, deps=(s,))
        p, alpha, m_i, l_i = _softmax_block(
            s, 0, full, qpos, m_i, l_i, scale_log2, BLOCK_N, s_layout
        )
        p_prev = gl.convert_layout(p.to(dtype), p_layout)
        for j in range(1, nb_w):
            cur = j % STAGES
            prev = (j - 1) % STAGES
            mbarrier.wait(k_ready.index(cur), (j // STAGES) & 1)
            s = warpgroup_mma(
                q_smem, k_smem.index(cur).permute((1, 0)), zero_s, use_acc=False, is_async=True
            )
            mbarrier.wait(v_ready.index(prev), ((j - 1) // STAGES) & 1)
            acc = warpgroup_mma(p_prev, v_smem.index(prev), acc, is_async=True)
            # The scores (issued first) are done; the last block's values may still run.
            s = warpgroup_mma_wait(1, deps=(s,))
            p, alpha, m_i, l_i = _softmax_block(
                s, j, full, qpos, m_i, l_i, scale_log2, BLOCK_N, s_layout
            )
            acc = warpgroup_mma_wait(0, deps=(acc,))
            mbarrier.arrive(free.index(prev), count=1)
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
            p_prev = gl.convert_layout(p.to(dtype), p_layout)
        last = (nb_w - 1) % STAGES
        mbarrier.wait(v_ready.index(last), ((nb_w - 1) // STAGES) & 1)
        acc = warpgroup_mma(p_prev, v_smem.index(last), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(free.index(last), count=1)

        out = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
        ro = row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
        do = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        gl.store(
            Out + (off + ro[:, None]) * stride_ot + h * stride_oh + do[None, :],
            out.to(dtype),
            mask=(ro < n)[:, None],
        )

    # Blocks past this group's rows: released once loaded, in ring order.
    for j in range(nb_w, nb):
        s_idx = j % STAGES
        mbarrier.wait(v_ready.index(s_idx), (j // STAGES) & 1)
        mbarrier.wait(k_ready.index(s_idx), (j // STAGES) & 1)
        mbarrier.arrive(free.index(s_idx), count=1)


@gluon.jit
def _release_dependents():
    gl.inline_asm_elementwise(
        "griddepcontrol.launch_dependents; // dummy $0",
        "=r",
        [],
        dtype=gl.int32,
        is_pure=False,
        pack=1,
    )


@gluon.jit
def _prefill_kernel(
    Q,
    K,
    V,
    Out,
    ChunkSlot,
    ChunkStart,
    ChunkLen,
    ChunkOff,
    TileChunk,
    TileBlock,
    stride_qt,
    stride_qh,
    stride_ks,
    stride_kp,
    stride_kh,
    stride_vs,
    stride_vp,
    stride_vh,
    stride_ot,
    stride_oh,
    scale_log2,
    GROUP: gl.constexpr,
    BLOCK_N: gl.constexpr,
    HEAD_DIM: gl.constexpr,
    STAGES: gl.constexpr,
    TILED: gl.constexpr,
    RELEASE: gl.constexpr,
):
    BLOCK_M: gl.constexpr = 128  # two consumer groups of 64 rows (WARP_PREFILL_BLOCK_M)
    if RELEASE:  # the kernel behind may start once every program here has (decode_attention)
        _release_dependents()
    h = gl.program_id(0)
    if TILED:  # a graph's fixed grid: program (h, i) takes tile i of the step's table
        c = gl.load(TileChunk + gl.program_id(1)).to(gl.int32)
        if c < 0:
            return
        mb = gl.load(TileBlock + gl.program_id(1)).to(gl.int32)
    else:
        mb = gl.num_programs(1) - 1 - gl.program_id(1)
        c = gl.program_id(2)
    n = gl.load(ChunkLen + c).to(gl.int32)
    row0 = mb * BLOCK_M
    if row0 >= n:
        return
    slot = gl.load(ChunkSlot + c).to(gl.int64)
    start = gl.load(ChunkStart + c).to(gl.int32)
    off = gl.load(ChunkOff + c).to(gl.int64)
    kvh = h // GROUP
    hi = gl.minimum(start + row0 + BLOCK_M, start + n)
    nb = gl.cdiv(hi, BLOCK_N)

    dtype: gl.constexpr = Q.dtype.element_ty
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, HEAD_DIM], dtype)
    q0 = gl.allocate_shared_memory(dtype, [64, HEAD_DIM], q_layout)
    q1 = gl.allocate_shared_memory(dtype, [64, HEAD_DIM], q_layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(free.index(i), count=2)  # one arrival per consumer group
    fence_async_shared()

    # The default partition (this program's 4 warps) and a worker take 64 rows each; a
    # one-warp worker loads. Registers go to the consumers (setmaxnreg).
    gl.warp_specialize(
        [
            (
                _consumer,
                (Q, Out, h, off, start, n, row0, nb, stride_qt, stride_qh, stride_ot,
                 stride_oh, scale_log2, q0, k_smem, v_smem, k_ready, v_ready, free),
            ),
            (
                _consumer,
                (Q, Out, h, off, start, n, row0 + 64, nb, stride_qt, stride_qh, stride_ot,
                 stride_oh, scale_log2, q1, k_smem, v_smem, k_ready, v_ready, free),
            ),
            (
                _loader,
                (K, V, slot, kvh, hi, nb, stride_ks, stride_kp, stride_kh, stride_vs,
                 stride_vp, stride_vh, k_smem, v_smem, k_ready, v_ready, free),
            ),
        ],
        [4, 1],
        [232, 40],
    )  # fmt: skip


def gluon_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    chunk_slot: torch.Tensor,
    chunk_start: torch.Tensor,
    chunk_len: torch.Tensor,
    chunk_off: torch.Tensor,
    max_chunk: int,
    scale: float,
    out: torch.Tensor,
    tiles: tuple[torch.Tensor, torch.Tensor] | None = None,
    release: bool = False,
    scratch: DescriptorScratch | None = None,
    block_n: int = 128,
    stages: int = 3,
) -> torch.Tensor:
    """``prefill_attention`` (``triton_prefill.py``) without window or paged pool, for 16-bit
    activations with 128-wide heads on a Hopper GPU: programs of ``WARP_PREFILL_BLOCK_M``
    tokens (``tiles`` built with it). ``block_n`` keys per block and ``stages`` ring buffers
    (224 KiB of shared memory at the defaults) are for tuning; ``release`` and ``scratch``
    as in ``prefill_attention``."""
    if release and scratch is None:
        raise ValueError("gluon_prefill_attention(release=True) needs a DescriptorScratch")
    check_layout(q, k_cache, v_cache)
    hq, d = q.shape[1], q.shape[2]
    group = hq // k_cache.shape[2]
    use_descriptor_scratch(scratch, q.device)
    grid, tile_chunk, tile_block = tile_grid(hq, tiles, max_chunk, WARP_PREFILL_BLOCK_M, chunk_slot)
    _prefill_kernel[grid](
        q,
        k_cache,
        v_cache,
        out,
        chunk_slot,
        chunk_start,
        chunk_len,
        chunk_off,
        tile_chunk,
        tile_block,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        out.stride(0),
        out.stride(1),
        scale * LOG2E,
        GROUP=group,
        BLOCK_N=block_n,
        HEAD_DIM=d,
        STAGES=stages,
        TILED=tiles is not None,
        RELEASE=release,
        num_warps=4,
    )
    return out
