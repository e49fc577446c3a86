"""Megatron-style sharded layers.

Column-parallel linears split their outputs (each rank computes its heads / its slice of
the MLP), row-parallel linears split their inputs and all-reduce the partial sums, the
embedding and LM head split the vocabulary. A pair column -> row needs one all-reduce.

The factories return ``Linear`` (an ``nn.Linear`` whose one-row matmuls use our GEMV on a
GPU) / ``nn.Embedding`` for a single rank, so tp=1 keeps the unsharded modules (same
parameters, no communication on the hot path).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches
from sarathi.model_executor.layers import gemv
from sarathi.model_executor.parallel.group import TPGroup
from sarathi.model_executor.parallel.sharding import vocab_range


class Linear(nn.Linear):
    """nn.Linear through ``gemv.linear`` (batch-1 decode matmuls on the split-K GEMV).
    ``keep_splits``: the layer's consumer is a fused kernel that takes ``gemv.SplitSums``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        keep_splits: bool = False,
        kernels: KernelSwitches = REFERENCE,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.keep_splits = keep_splits
        self.kernels = kernels

    # Split sums where keep_splits is set: a deliberate override of nn.Linear's Tensor return.
    def forward(self, x: torch.Tensor) -> torch.Tensor | gemv.SplitSums:  # type: ignore[override]
        return gemv.linear(x, self.weight, self.bias, self.keep_splits, self.kernels)


class ColumnParallelLinear(Linear):
    """Holds this rank's rows of the weight; its output stays sharded (no communication)."""

    def __init__(
        self,
        in_features: int,
        local_out_features: int,
        bias: bool,
        tp: TPGroup,
        keep_splits: bool = False,
        kernels: KernelSwitches = REFERENCE,
    ) -> None:
        super().__init__(in_features, local_out_features, bias, keep_splits, kernels)
        self.tp = tp


class RowParallelLinear(Linear):
    """Holds this rank's columns of the weight; the partial products are summed across ranks.

    The bias is added once, after the sum (adding it on every rank would count it tp times).
    ``keep_splits`` (no bias): a one-row matmul's float32 split sums go to slot
    ``peer_slot`` of the group's symmetric buffer and the next fused norm sums them over
    splits and ranks (where the group has one; otherwise they are all-reduced as they are
    and the norm adds up the splits). Consecutive row-parallel layers must take alternate
    slots (see ``all_reduce_norm``).
    """

    def __init__(
        self,
        local_in_features: int,
        out_features: int,
        bias: bool,
        tp: TPGroup,
        keep_splits: bool = False,
        kernels: KernelSwitches = REFERENCE,
        peer_slot: int = 0,
    ) -> None:
        super().__init__(local_in_features, out_features, bias, keep_splits and not bias, kernels)
        self.tp = tp
        self.peers = tp.peers(peer_slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor | gemv.SplitSums:  # type: ignore[override]
        out = gemv.linear(
            x, self.weight, keep_splits=self.keep_splits, kernels=self.kernels, peers=self.peers
        )
        if isinstance(out, gemv.SplitSums):
            if out.peers is not None:
                return out
            return replace(out, parts=self.tp.all_reduce(out.parts))
        out = self.tp.all_reduce(out)
        return out if self.bias is None else out + self.bias


class VocabParallelEmbedding(nn.Embedding):
    """Rows ``[start, end)`` of the vocabulary; other ranks contribute zeros to the sum."""

    def __init__(self, vocab_size: int, hidden_size: int, tp: TPGroup) -> None:
        self.vocab_start, self.vocab_end, per_rank = vocab_range(vocab_size, tp.rank, tp.world_size)
        super().__init__(per_rank, hidden_size)
        self.tp = tp

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        outside = (input_ids < self.vocab_start) | (input_ids >= self.vocab_end)
        local = (input_ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local, self.weight)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        return self.tp.all_reduce(out)


class ParallelLMHead(Linear):
    """Logits of this rank's vocabulary slice, gathered on rank 0 (the sampling rank)."""

    def __init__(
        self, hidden_size: int, vocab_size: int, tp: TPGroup, kernels: KernelSwitches = REFERENCE
    ) -> None:
        _, _, per_rank = vocab_range(vocab_size, tp.rank, tp.world_size)
        super().__init__(hidden_size, per_rank, False, kernels=kernels)
        self.vocab_size = vocab_size
        self.tp = tp

    # None on the ranks that do not sample: a deliberate override of Linear's return type.
    def forward(self, hidden: torch.Tensor) -> torch.Tensor | None:  # type: ignore[override]
        full = self.tp.gather_last_dim(gemv.linear(hidden, self.weight, kernels=self.kernels))
        return None if full is None else full[..., : self.vocab_size]


def column_linear(
    in_features: int,
    local_out_features: int,
    bias: bool,
    tp: TPGroup,
    keep_splits: bool = False,
    kernels: KernelSwitches = REFERENCE,
) -> Linear:
    if tp.world_size == 1:
        return Linear(in_features, local_out_features, bias, keep_splits, kernels)
    return ColumnParallelLinear(in_features, local_out_features, bias, tp, keep_splits, kernels)


def row_linear(
    local_in_features: int,
    out_features: int,
    bias: bool,
    tp: TPGroup,
    keep_splits: bool = False,
    kernels: KernelSwitches = REFERENCE,
    peer_slot: int = 0,
) -> Linear:
    if tp.world_size == 1:
        return Linear(local_in_features, out_features, bias, keep_splits, kernels)
    return RowParallelLinear(
        local_in_features, out_features, bias, tp, keep_splits, kernels, peer_slot
    )


def vocab_embedding(vocab_size: int, hidden_size: int, tp: TPGroup) -> nn.Embedding:
    if tp.world_size == 1:
        return nn.Embedding(vocab_size, hidden_size)
    return VocabParallelEmbedding(vocab_size, hidden_size, tp)


def lm_head(
    hidden_size: int, vocab_size: int, tp: TPGroup, kernels: KernelSwitches = REFERENCE
) -> Linear:
    if tp.world_size == 1:
        return Linear(hidden_size, vocab_size, False, kernels=kernels)
    return ParallelLMHead(hidden_size, vocab_size, tp, kernels)
