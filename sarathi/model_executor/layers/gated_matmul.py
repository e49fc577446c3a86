"""The gate|up matmul with SiLU-and-mul in its epilogue, for prefill-sized steps on Hopper.

cuBLAS's matmul writes [M, 2 * inter] and a second kernel reads it back to write
silu(gate) * up, [M, inter]. Here one Triton kernel loads a tile of gate rows and the up rows
of the same columns in one tensor-descriptor (TMA) load, viewing the weight [gate; up] as
[2, inter, K], multiplies both with one dot into a [128, 256] accumulator, and writes only
the product. Rounding follows the reference: gate and up rounded to the activations' dtype,
silu in that dtype, then the product (``gemv.silu_mul``).

Where it runs is measured (benchmarks/gated_matmul.py, H200, graphs of a model's layers,
against cuBLAS then ``fused.silu_and_mul``): with 768 rows or more (mixed steps and prefill
chunks, where the matmul is compute-bound) it is 1.02-1.22x faster when its 128 x 128 output
tiles fill the SMs' last round well (Llama-3-8B 1.04x at 1,024 rows, Llama-2-7B 1.05x,
Qwen3-0.6B 1.10x at 1,088) and 0.74-0.93x when they leave much of it idle (Qwen3-0.6B at
768 and 1,024 rows), so it runs only where that fill is at least ``MIN_FILL``. Below 768
rows no tiling tried beat the two launches across model shapes (each lost somewhere by up to
35%), so those rows keep them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from sarathi.model_executor.kernel_switches import num_sms, triton_installed
from sarathi.model_executor.pdl import launch_args

MIN_ROWS = 768
MIN_FILL = 0.8  # tiles / (rounds of one tile per SM x SMs)


@dataclass(frozen=True)
class GatedConfig:
    block_m: int
    block_n: int  # output columns per tile: the accumulator is twice as wide (gate and up)
    block_k: int
    stages: int
    warps: int
    persistent: bool  # one program per SM looping over tiles, its loops flattened


TILING = GatedConfig(128, 128, 64, 3, 8, True)


def gated_config(rows: int, inter: int, sms: int) -> GatedConfig | None:
    """The tiling for ``rows`` rows of a gate|up matmul with ``inter`` outputs each on a
    GPU of ``sms`` SMs, or None where cuBLAS and the separate SiLU-and-mul are faster."""
    if rows < MIN_ROWS:
        return None
    tiles = -(-rows // TILING.block_m) * -(-inter // TILING.block_n)
    rounds = -(-tiles // sms)
    return TILING if tiles / (rounds * sms) >= MIN_FILL else None


@functools.cache
def _hopper(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= (9, 0)


def takes_gated(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``gated_matmul`` runs this matmul: a Hopper-or-later GPU, 16-bit floats,
    strides a tensor descriptor can address (16-byte aligned, unit last), and rows for
    which ``gated_config`` has a tiling."""
    if not triton_installed() or x.device.type != "cuda" or x.dim() != 2:
        return False
    elem = x.element_size()
    inter = weight.shape[0] // 2
    return (
        x.dtype in (torch.float16, torch.bfloat16)
        and weight.dtype == x.dtype
        and _hopper(x.device.index if x.device.index is not None else torch.cuda.current_device())
        and x.stride(1) == 1
        and (x.stride(0) * elem) % 16 == 0
        and weight.is_contiguous()
        and (weight.shape[1] * elem) % 16 == 0
        and (inter * elem) % 16 == 0
        and x.data_ptr() % 16 == 0
        and weight.data_ptr() % 16 == 0
        and gated_config(x.shape[0], inter, num_sms(x.device)) is not None
    )


if triton_installed():
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor

    from sarathi.model_executor.layers.gemv import silu_mul
    from sarathi.model_executor.pdl import wait_prior

    @triton.jit
    def _gated_matmul_kernel(
        x_desc,
        w_desc,
        o_desc,
        M,
        N,
        K,
        programs,
        BM: tl.constexpr,
        BN: tl.constexpr,
        BK: tl.constexpr,
        STAGES: tl.constexpr,
        PERSISTENT: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """Output tiles [BM, BN] of silu(x @ gate^T) * (x @ up^T); program p takes tiles
        p, p + programs, ... in groups of eight row blocks, so the weight columns a group
        shares are read from L2 while it works through them."""
        wait_prior(PDL)
        dt: tl.constexpr = o_desc.dtype
        tiles_m = tl.cdiv(M, BM)
        tiles_n = tl.cdiv(N, BN)
        group: tl.constexpr = 8
        per_group = group * tiles_n
        for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, programs, flatten=PERSISTENT):
            first_m = (tile // per_group) * group
            rows_in_group = min(tiles_m - first_m, group)
            om = (first_m + (tile % per_group) % rows_in_group) * BM
            on = ((tile % per_group) // rows_in_group) * BN
            acc = tl.zeros((BM, 2 * BN), tl.float32)
            for k in tl.range(0, K, BK, num_stages=STAGES):
                w = w_desc.load([0, on, k]).reshape(2 * BN, BK)
                acc = tl.dot(x_desc.load([om, k]), w.T, acc)
            g, u = tl.split(acc.to(dt).to(tl.float32).reshape(BM, 2, BN).permute(0, 2, 1))
            o_desc.store([om, on], silu_mul(g, u, dt))


def gated_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    inter: int,
    pdl: bool = False,
    config: GatedConfig | None = None,
) -> torch.Tensor:
    """silu(x @ gate^T) * (x @ up^T) for x [M, K] and weight = [gate; up] ([2 * inter, K]);
    the caller checks ``takes_gated`` first. ``config``: a tiling other than the measured
    one, for benchmarks."""
    m, k = x.shape
    cfg = config or TILING
    out = torch.empty(m, inter, dtype=x.dtype, device=x.device)
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(inter, cfg.block_n)
    programs = min(tiles, num_sms(x.device)) if cfg.persistent else tiles
    _gated_matmul_kernel[(programs,)](
        TensorDescriptor.from_tensor(x, [cfg.block_m, cfg.block_k]),
        TensorDescriptor.from_tensor(weight.view(2, inter, k), [2, cfg.block_n, cfg.block_k]),
        TensorDescriptor.from_tensor(out, [cfg.block_m, cfg.block_n]),
        m,
        inter,
        k,
        programs,
        BM=cfg.block_m,
        BN=cfg.block_n,
        BK=cfg.block_k,
        STAGES=cfg.stages,
        PERSISTENT=cfg.persistent,
        num_warps=cfg.warps,
        **launch_args(pdl),
    )
    return out
