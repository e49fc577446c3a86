"""Triton prefill attention over the vattention slot layout (``triton_common.py``).

One program per (query head, query block, chunk) over the slot's prefix plus the chunk
itself, causal with the chunk's offset, optionally within a sliding window; or, packed
(``PrefillLaunch.packed``), one per (KV head, query block, chunk) with a row per (token,
query head of the group), so the group's heads share each key/value block. On Hopper the
key/value blocks load through tensor descriptors (the TMA unit copies them to shared memory;
rows past the block's last key read as zeros), elsewhere and for the paged baseline through
pointers. Heads vary fastest and the blocks that see the most keys run first, so the chip
does not wait on a long block started last.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sarathi.model_executor.attention.launch import PrefillLaunch, prefill_launch
from sarathi.model_executor.attention.triton_common import (
    LOG2E,
    NEG_BIG,
    attend,
    attend_block,
    check_layout,
)


@triton.jit
def _prefill_keys(
    q,
    qpos,
    k_base,
    v_base,
    BlockTable,
    stride_bt,
    slot,
    first,
    end,
    hi,
    window,
    stride_ks,
    stride_kp,
    stride_vs,
    stride_vp,
    scale_log2,
    m_i,
    l_i,
    acc,
    k_desc,
    v_desc,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    PAGED: tl.constexpr,
    PAGE: tl.constexpr,
    MASKED: tl.constexpr,
    TMA: tl.constexpr,
):
    """The query rows ``q`` (at positions ``qpos``) over the keys at ``[first, end)``, in
    blocks; keys at ``hi`` and past it do not exist. ``MASKED``: apply the causal mask (and
    the sliding window); without it every row sees every key. ``TMA``: the blocks load
    through ``k_desc``/``v_desc`` (rows past ``hi`` read as zeros)."""
    for p0 in range(first, end, BLOCK_N):
        pos = p0 + tl.arange(0, BLOCK_N)
        pmask = pos < hi
        keep = pmask[None, :]
        if MASKED:
            keep = keep & (pos[None, :] <= qpos[:, None])
            if HAS_WINDOW:
                keep = keep & (qpos[:, None] - pos[None, :] < window)
        if TMA:
            k = k_desc.load([p0, 0])
            v = v_desc.load([p0, 0])
            m_i, l_i, acc = attend(q, k, v, keep, scale_log2, m_i, l_i, acc, MASKED)
        else:
            m_i, l_i, acc = attend_block(
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
                HEAD_DIM,
                PAGED,
                PAGE,
                MASKED,
            )
    return m_i, l_i, acc


@triton.jit
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
    BlockTable,
    stride_bt,
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
    window,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    PAGED: tl.constexpr,
    PAGE: tl.constexpr,
    TILED: tl.constexpr,
    HEADS: tl.constexpr,
    TMA: tl.constexpr,
    RELEASE: tl.constexpr,
):
    if RELEASE:  # the kernel behind may start once every program here has (decode_attention)
        tl.extra.cuda.gdc_launch_dependents()
    # A program takes BLOCK_M // HEADS tokens of a chunk for HEADS query heads of one KV
    # group, a row per (token, head): with HEADS = GROUP the group's heads share each key
    # and value block loaded, instead of every head loading it again.
    TOKENS = BLOCK_M // HEADS
    # Heads vary fastest over the grid and the longest query blocks (the most keys) come
    # first, so the programs that start last are short ones and the chip ends together.
    h0 = tl.program_id(0) * HEADS
    if TILED:  # a graph's fixed grid: program (h, i) takes tile i of the step's table
        c = tl.load(TileChunk + tl.program_id(1)).to(tl.int32)
        if c < 0:
            return
        mb = tl.load(TileBlock + tl.program_id(1)).to(tl.int32)
    else:
        mb = tl.num_programs(1) - 1 - tl.program_id(1)
        c = tl.program_id(2)
    n = tl.load(ChunkLen + c).to(tl.int32)
    if mb * TOKENS >= n:
        return
    slot = tl.load(ChunkSlot + c).to(tl.int64)
    start = tl.load(ChunkStart + c).to(tl.int32)
    off = tl.load(ChunkOff + c).to(tl.int64)
    kvh = h0 // GROUP

    r = tl.arange(0, BLOCK_M)
    rows = mb * TOKENS + r // HEADS  # the row's token in the chunk
    heads = h0 + r % HEADS
    rmask = rows < n
    qpos = start + rows
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + (off + rows[:, None]) * stride_qt + heads[:, None] * stride_qh + d[None, :],
        mask=rmask[:, None],
        other=0.0,
    )

    # Keys this block can see: up to its last query's position (inclusive).
    hi = tl.minimum(start + (mb + 1) * TOKENS, start + n)
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(start + mb * TOKENS - window + 1, 0)
        lo = (lo // BLOCK_N) * BLOCK_N

    m_i = tl.full([BLOCK_M], NEG_BIG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + kvh * stride_kh
    v_base = V + kvh * stride_vh
    k_desc = None
    v_desc = None
    if TMA:  # the slot's keys (values) of this KV head as a [hi, HEAD_DIM] matrix
        k_desc = tl.make_tensor_descriptor(
            k_base + slot * stride_ks, [hi, HEAD_DIM], [stride_kp, 1], [BLOCK_N, HEAD_DIM]
        )
        v_desc = tl.make_tensor_descriptor(
            v_base + slot * stride_vs, [hi, HEAD_DIM], [stride_vp, 1], [BLOCK_N, HEAD_DIM]
        )
    # Key blocks that end at or before this block's first query are seen by every row:
    # no causal mask there (most of a chunk's context when it has a prefix).
    full = lo
    if not HAS_WINDOW:
        full = ((start + mb * TOKENS + 1) // BLOCK_N) * BLOCK_N
        m_i, l_i, acc = _prefill_keys(
            q,
            qpos,
            k_base,
            v_base,
            BlockTable,
            stride_bt,
            slot,
            0,
            full,
            hi,
            window,
            stride_ks,
            stride_kp,
            stride_vs,
            stride_vp,
            scale_log2,
            m_i,
            l_i,
            acc,
            k_desc,
            v_desc,
            BLOCK_N,
            HEAD_DIM,
            HAS_WINDOW,
            PAGED,
            PAGE,
            False,
            TMA,
        )
    m_i, l_i, acc = _prefill_keys(
        q,
        qpos,
        k_base,
        v_base,
        BlockTable,
        stride_bt,
        slot,
        full,
        hi,
        hi,
        window,
        stride_ks,
        stride_kp,
        stride_vs,
        stride_vp,
        scale_log2,
        m_i,
        l_i,
        acc,
        k_desc,
        v_desc,
        BLOCK_N,
        HEAD_DIM,
        HAS_WINDOW,
        PAGED,
        PAGE,
        True,
        TMA,
    )

    out = acc / l_i[:, None]
    tl.store(
        Out + (off + rows[:, None]) * stride_ot + heads[:, None] * stride_oh + d[None, :],
        out.to(Out.dtype.element_ty),
        mask=rmask[:, None],
    )


def has_tma(device: torch.device) -> bool:
    """Whether kernels on ``device`` can load through tensor descriptors: a GPU of compute
    capability 9.0 or later (Hopper's TMA unit), or Triton's interpreter."""
    if device.type != "cuda":
        return True  # the interpreter runs descriptor loads on the host
    return torch.cuda.get_device_capability(device) >= (9, 0)


class DescriptorScratch:
    """Global memory for the tensor descriptors the prefill kernel builds on the device (128
    bytes each), which Triton asks its allocator for at every launch; held for the owner's
    lifetime.

    Triton drops what the allocator returns once the launch is queued, and torch's caching
    allocator then hands those bytes to the next allocation on the stream: safe only while
    kernels run in stream order. A decode kernel launched ``behind`` a releasing prefill kernel
    runs beside it, and its split partials, allocated after the prefill launch, took those bytes
    and overwrote descriptors still in use (an illegal instruction: TP=2 eager mixed steps on
    H200s). An outgrown buffer is kept as well, since a graph captured with it holds its
    address."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    def take(self, size: int, device: torch.device) -> torch.Tensor:
        """``size`` bytes at the start of this scratch's buffer on ``device``."""
        buf = next((b for b in reversed(self._buffers) if b.device == device), None)
        if buf is None or buf.numel() < size:
            grown = max(size, 2 * buf.numel()) if buf is not None else size
            buf = torch.empty(grown, dtype=torch.int8, device=device)
            self._buffers.append(buf)
        return buf[:size]


def use_descriptor_scratch(scratch: DescriptorScratch | None, device: torch.device) -> None:
    """Have the next launch on ``device`` build its tensor descriptors in ``scratch``.
    Triton keeps its allocator per thread context, and the engine may launch from a thread
    of its own: set it where the kernel launches. Without a caller's scratch, one for this
    launch alone: nothing runs beside it (no release), so stream order keeps its memory
    until the kernel is done."""
    held = scratch or DescriptorScratch()
    triton.set_allocator(lambda size, alignment, stream: held.take(size, device))


def tile_grid(
    head_programs: int,
    tiles: tuple[torch.Tensor, torch.Tensor] | None,
    max_chunk: int,
    block_m: int,
    chunk_slot: torch.Tensor,
) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor]:
    """A prefill kernel's grid and tile tables: one program per head and tile of
    ``tiles``, or without them one per head, ``block_m``-token query block and chunk (the
    tables then unused: ``chunk_slot`` stands in)."""
    if tiles is not None:
        return (head_programs, tiles[0].numel()), tiles[0], tiles[1]
    grid = (head_programs, triton.cdiv(max_chunk, block_m), chunk_slot.numel())
    return grid, chunk_slot, chunk_slot


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    chunk_slot: torch.Tensor,
    chunk_start: torch.Tensor,
    chunk_len: torch.Tensor,
    chunk_off: torch.Tensor,
    max_chunk: int,
    scale: float,
    window: int | None,
    out: torch.Tensor,
    block_table: torch.Tensor | None = None,
    tiles: tuple[torch.Tensor, torch.Tensor] | None = None,
    launch: PrefillLaunch | None = None,
    release: bool = False,
    scratch: DescriptorScratch | None = None,
) -> torch.Tensor:
    """q: [T, Hq, D] (chunk c's rows start at chunk_off[c]); out rows of the chunks written.
    With ``block_table`` the caches are paged pools, as in ``decode_attention``. With
    ``tiles`` (chunk and query block of each program, chunk -1 for none, best with the
    blocks that see the most keys first; see ``prefill_launch``) the grid is one program
    per tile and head, whatever the chunks.
    ``launch`` overrides the launch shape, for tuning (``benchmarks/prefill_configs.py``);
    tiles must then be built with its ``block_m``. ``release``: a decode kernel launched
    ``behind`` this one may start once all of its programs have (``decode_attention``); it
    needs ``scratch``, where the descriptors live for as long as the kernel runs."""
    if release and scratch is None:
        raise ValueError("prefill_attention(release=True) needs a DescriptorScratch")
    check_layout(q, k_cache, v_cache)
    hq, d = q.shape[1], q.shape[2]
    group = hq // k_cache.shape[2]
    launch = launch or prefill_launch(d)
    # A program's rows are a power of two (block_m x heads): groups of other sizes (7 query
    # heads per KV head in Qwen2-0.5B) run one head per program.
    heads = group if launch.packed and group & (group - 1) == 0 else 1
    paged = block_table is not None
    bt = chunk_slot if block_table is None else block_table  # chunk_slot: unused, not paged
    tma = launch.tma and not paged and has_tma(q.device)
    if tma and q.is_cuda:
        use_descriptor_scratch(scratch, q.device)
    grid, tile_chunk, tile_block = tile_grid(
        hq // heads, tiles, max_chunk, launch.block_m, chunk_slot
    )
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
        bt,
        bt.stride(0),
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
        window or 0,
        GROUP=group,
        BLOCK_M=launch.block_m * heads,
        BLOCK_N=launch.block_n,
        HEAD_DIM=d,
        HAS_WINDOW=window is not None,
        PAGED=paged,
        PAGE=k_cache.shape[1] if paged else 1,
        TILED=tiles is not None,
        HEADS=heads,
        TMA=tma,
        RELEASE=release,
        num_warps=launch.warps,
        num_stages=launch.stages,
    )
    return out
