"""One-row matmuls (batch-1 decode) as Triton GEMVs, and their output left as split sums.

At batch 1 a matmul reads its whole weight to make one row: the split-K GEMV here streams the
weight on every SM (cuBLAS picks tiles made for many rows) and, under programmatic dependent
launch, starts loading it while the previous kernel finishes. Its K splits' float32 partial
sums can stay apart (``SplitSums``) for the next fused kernel (``fused``: residual add +
RMSNorm, rotary, SiLU-and-mul; the decode attention) to add up as it loads them
(``load_split_sums``), which saves a summing launch per matmul. A gate|up matrix small enough
runs as one gated GEMV that finishes SiLU-and-mul itself (``gated_gemv``).

The reference is F.linear; tests compare the two on the GPU and in Triton's interpreter.
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
    [splits, N]: the next fused kernel (residual add + RMSNorm, rotary, SiLU-and-mul, the
    batch-1 decode attention) adds them up as it reads them, which saves a launch per
    matmul in the batch-1 decode graph."""

    parts: torch.Tensor
    dtype: torch.dtype  # what the matmul's output would be
    pdl: bool = False  # launch the summing kernel with programmatic dependent launch
    # Set where ``parts`` is this rank's share of a row-parallel matmul, in symmetric memory:
    # the sum over the group's ranks is still to be taken (by all_reduce_add_rms_norm).
    peers: PeerParts | None = None

    def total(self) -> torch.Tensor:
        """The matmul's output, [1, N] in ``dtype``."""
        kernel_input(self)  # refuses a rank's share: only all_reduce_add_rms_norm sums over ranks
        return _sum_splits(self.parts, None, self.dtype, self.pdl)


def kernel_input(x: torch.Tensor | SplitSums) -> tuple[torch.Tensor, int, torch.dtype]:
    """A fused kernel's input as (tensor, split count or 0, the activations' dtype): split
    sums stay unsummed for the kernel to add up as it loads them."""
    if isinstance(x, SplitSums):
        if x.peers is not None:
            raise ValueError(
                "a row-parallel matmul's split sums are summed over ranks by "
                "all_reduce_add_rms_norm only"
            )
        return x.parts, x.parts.shape[0], x.dtype
    return (x if x.stride(-1) == 1 else x.contiguous()), 0, x.dtype


if triton_installed():
    import triton
    import triton.language as tl

    from sarathi.model_executor.pdl import release_then_wait, wait_prior

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
    def silu_mul(g, u, dt: tl.constexpr):
        """silu(g) * u in ``dt``, from g and u already rounded to ``dt`` (as float32).
        Reference: silu in the activations' dtype, then the product. The gated GEMV ends
        in it, and so does ``fused._silu_mul_kernel``."""
        s = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
        return (s * u).to(dt)

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
        tl.store(Out + rn, silu_mul(g, u, dt), mask=nmask)

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
        release_then_wait(PDL)
        rn = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = rn < N
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for s in tl.static_range(SPLITS):
            acc += tl.load(Part + s * N + rn, mask=mask, other=0.0)
        if HAS_BIAS:
            acc += tl.load(Bias + rn, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + rn, acc.to(Y.dtype.element_ty), mask=mask)


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
    if takes_gemv(x, weight, keep_splits, kernels):
        config = gemv_config(*weight.shape)
        return gemv(x, weight, bias, config, keep_splits, kernels.pdl, peers)
    return F.linear(x, weight, bias)


def takes_gemv(
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


# Up to this many gate|up weights (2 * inter * K) one row takes the gated GEMV. Measured on
# H200s (batch-1 decode step, same run each): faster for a rank's 11,008 x 4,096 of
# Llama-2-7B under TP=2 (2.81 -> 2.70 ms) and for Qwen3-0.6B's 6,144 x 1,024 (0.957 ->
# 0.936 ms); slower for a rank's 14,336 x 4,096 of Llama-3-8B under TP=2 (2.965 -> 3.023,
# twice), the whole 22,016 x 4,096 of Llama-2-7B (3.91 -> 4.00) and Llama-3-8B's
# 28,672 x 4,096 (4.25 -> 4.33): there one pass over K is slower than the split-K GEMV's
# splits by more than the silu-and-mul launch it saves.
GATED_GEMV_MAX = 48 * 2**20


def gated_gemv(x: torch.Tensor, weight: torch.Tensor, inter: int, pdl: bool) -> torch.Tensor:
    """silu(x @ gate^T) * (x @ up^T) for one row x [1, K] and weight = [gate; up]
    ([2 * inter, K], K contiguous), in x's dtype: one kernel, where the GEMV would need a
    silu-and-mul launch after it."""
    k = weight.shape[1]
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
        **launch_args(pdl),
    )
    return out
