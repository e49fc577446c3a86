"""Tensor parallelism (Megatron-style): the rank's group and the sharded layers.

Nothing here is module-level state: a ``TPGroup`` is created once per worker process and
passed into the model's constructor, so two engines in one process never share it.
"""

from sarathi.model_executor.parallel.group import TPGroup, init_tp_group
from sarathi.model_executor.parallel.layers import (
    ColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    VocabParallelEmbedding,
    column_linear,
    lm_head,
    row_linear,
    vocab_embedding,
)
from sarathi.model_executor.parallel.sharding import HeadLayout, TensorSlice, head_layout

__all__ = [
    "ColumnParallelLinear",
    "HeadLayout",
    "ParallelLMHead",
    "RowParallelLinear",
    "TPGroup",
    "TensorSlice",
    "VocabParallelEmbedding",
    "column_linear",
    "head_layout",
    "init_tp_group",
    "lm_head",
    "row_linear",
    "vocab_embedding",
]
