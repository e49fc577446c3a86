"""Launch shapes of the Triton attention kernels (``triton_decode.py``,
``triton_prefill.py``), chosen by measurement; kept apart from the kernels so that what
plans a step (the graphs' context splits, the prefill tile table) reads the same shapes
without importing Triton."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecodeLaunch:
    """Launch shape of the decode kernel."""

    block_n: int  # keys per iteration; splits are whole blocks
    warps: int
    stages: int
    # The fewest key blocks a split takes: at a short context fewer splits then hold keys
    # (the rest stay empty), each with more of them.
    min_blocks: int = 1


@dataclass(frozen=True)
class PrefillLaunch:
    """Launch shape of the prefill kernel: ``block_m`` tokens of a chunk per program (the
    tile table's unit), ``block_n`` keys per iteration. ``packed``: a program takes the
    tokens for every query head of a KV group (block_m x group rows, where the group size is
    a power of two), so the group shares each key/value block it loads; else one head per
    program. ``tma``: load keys and values through tensor descriptors (the Hopper TMA unit)
    where the GPU has one and the cache is not paged."""

    block_m: int
    block_n: int
    warps: int
    stages: int
    packed: bool = False
    tma: bool = True


def decode_launch(batch: int, kv_heads: int, group: int, num_sms: int) -> DecodeLaunch:
    """The decode kernel's launch shape for a batch of ``batch`` sequences with ``kv_heads``
    KV heads, each shared by ``group`` query heads (``benchmarks/decode_configs.py``, H200).
    With many programs per SM (batch 256 x 8 KV heads on 132 SMs), 32-key blocks on two
    warps, three stages deep, read 7-9% faster at 600-token contexts than 64-key blocks on
    four warps (more small programs resident per SM keep more loads in flight), and match
    them at 2,048; at batch 64 (four programs per SM) they were as fast or slower.
    At batch 1 without grouped query heads a split takes at least two blocks: a short
    context then fills the chip about once instead of twice, and each program's fixed cost
    (the rotary, the partial result and its merge) is paid half as often. Where a block
    serves a group of query heads, one block a split is faster. H200 steps, same machine,
    two sessions: Llama-2-7B (no groups) at 512 tokens 3.68-3.71 ms with two blocks vs
    3.74-3.78 with one, at 4,096 unchanged; Llama-3-8B (groups of 4) at 2,048 4.10-4.135 ms
    with one vs 4.15-4.19 with two (``benchmarks/results/b1_min_blocks_ab_h200.json``)."""
    if batch * kv_heads >= 8 * num_sms:
        return DecodeLaunch(block_n=32, warps=2, stages=3)
    min_blocks = 2 if batch == 1 and group == 1 else 1
    return DecodeLaunch(block_n=64, warps=4, stages=2, min_blocks=min_blocks)


# Tokens per program of the warp-specialized Gluon prefill kernel (``gluon_prefill.py``):
# two consumer warp groups of 64 rows.
WARP_PREFILL_BLOCK_M = 128


def prefill_launch(head_dim: int, warp_specialized: bool = False) -> PrefillLaunch:
    """The Triton prefill kernel's launch shape; its ``block_m`` is the unit of the tile
    table a step (and a mixed-step graph) is planned with. ``warp_specialized``: the model's
    other layers run the Gluon kernel, whose programs take 128 tokens, so this one does too
    (a sliding-window layer beside them)."""
    if warp_specialized:
        return PrefillLaunch(WARP_PREFILL_BLOCK_M, 64, 8, 3)
    return PrefillLaunch(128 if head_dim <= 64 else 64, 64, 4, 3)


def prefill_tiles(chunks: Sequence[tuple[int, int]], block_m: int) -> tuple[np.ndarray, np.ndarray]:
    """The prefill kernel's tile table for chunks given as (start, length): each tile's
    chunk and query block (``block_m`` tokens), the blocks that see the most keys first.
    The kernel runs tiles in table order, so the programs that start last are short ones
    and the chip finishes together (Llama-3-8B, 960-token chunk, H200: 1.07-1.29x faster
    than in chunk order)."""
    starts = np.asarray([s for s, _ in chunks], dtype=np.int64)
    blocks = np.asarray([-(-n // block_m) for _, n in chunks], dtype=np.int64)
    chunk = np.repeat(np.arange(len(chunks), dtype=np.int64), blocks)
    block = np.arange(len(chunk), dtype=np.int64) - np.repeat(np.cumsum(blocks) - blocks, blocks)
    seen = starts[chunk] + (block + 1) * block_m
    order = np.argsort(-seen, kind="stable")
    return chunk[order], block[order]


# The most splits a sequence's keys take in the decode kernel (the merge reads them all).
MAX_DECODE_SPLITS = 64


def decode_splits(batch: int, kv_heads: int, num_sms: int) -> int:
    """Splits of each sequence's keys in the decode kernel: enough programs to fill the
    chip twice over. The kernel divides every sequence's own context among them, in whole
    key blocks, at run time, so a graph stays valid at any context and the splits share
    each context's keys however short it is (rounding up to whole blocks can leave the
    last ones empty). Split sizes fixed over the longest context a graph allows would leave
    one split of nine busy at short contexts (on an H200, batch-1 Llama-2-7B engine steps
    at 512 tokens: 4.33 ms that way, 3.99 this way; ``benchmarks/results/README.md``)."""
    return max(1, min(MAX_DECODE_SPLITS, math.ceil(2 * num_sms / max(1, batch * kv_heads))))
