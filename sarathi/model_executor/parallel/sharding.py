"""Which slice of each full (checkpoint) tensor a rank owns.

Pure arithmetic, shared by the layers (local sizes) and the loader (what to read).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSlice:
    """``length`` entries from ``start`` along ``dim`` of a checkpoint tensor whose size
    along ``dim`` is ``full`` (checked by the loader, so a wrong checkpoint is not silently
    cut to fit)."""

    dim: int
    start: int
    length: int
    full: int


@dataclass(frozen=True)
class HeadLayout:
    """Attention heads of one rank: a contiguous run of query heads and of KV heads."""

    num_heads: int  # query heads on this rank
    num_kv_heads: int  # KV heads on this rank (replicated when the model has fewer than ranks)
    q_start: int  # first query head (checkpoint numbering)
    kv_start: int  # first KV head (checkpoint numbering)


def head_layout(num_heads: int, num_kv_heads: int, rank: int, world_size: int) -> HeadLayout:
    if num_heads % world_size:
        raise ValueError(
            f"tensor_parallel_size {world_size} must divide the model's {num_heads} attention heads"
        )
    local_q = num_heads // world_size
    if num_kv_heads >= world_size:
        if num_kv_heads % world_size:
            raise ValueError(
                f"tensor_parallel_size {world_size} must divide the model's "
                f"{num_kv_heads} KV heads (or be a multiple of it)"
            )
        local_kv = num_kv_heads // world_size
        kv_start = rank * local_kv
    else:
        if world_size % num_kv_heads:
            raise ValueError(
                f"with {num_kv_heads} KV heads, tensor_parallel_size "
                f"{world_size} must be a multiple of {num_kv_heads}"
            )
        # Each KV head serves world_size / num_kv_heads consecutive ranks, whose query heads
        # are exactly that KV head's group.
        local_kv = 1
        kv_start = rank // (world_size // num_kv_heads)
    return HeadLayout(local_q, local_kv, rank * local_q, kv_start)


def split_evenly(size: int, rank: int, world_size: int, what: str) -> TensorSlice:
    if size % world_size:
        raise ValueError(f"tensor_parallel_size {world_size} must divide {what} ({size})")
    n = size // world_size
    return TensorSlice(0, rank * n, n, size)


def vocab_range(vocab_size: int, rank: int, world_size: int) -> tuple[int, int, int]:
    """(first id, end id, rows per rank): every rank holds ceil(V / tp) rows, the last
    one's tail is padding that is never looked up and whose logits are dropped."""
    per_rank = -(-vocab_size // world_size)
    start = min(rank * per_rank, vocab_size)
    return start, min(start + per_rank, vocab_size), per_rank
