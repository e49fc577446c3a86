"""What attention needs to know about one step's flat batch.

The batch is laid out decodes first (one token each), then prefill chunks. Every token's
K/V is written to ``(slot, position)`` of the cache before attention reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttentionMetadata:
    slot_of_token: torch.Tensor  # [T] slot of each token, for writing K/V
    positions: torch.Tensor  # [T]
    num_decodes: int  # the first num_decodes tokens are decodes
    decode_slots: torch.Tensor  # [num_decodes]
    decode_context_lens: torch.Tensor  # [num_decodes] tokens to attend to, current included
    max_decode_context: int
    # One entry per prefill chunk: (slot, start position, number of tokens); the chunk's
    # tokens follow each other in the flat batch after the decodes.
    prefills: list[tuple[int, int, int]]
    # Backends keep per-step derived tensors here so every layer reuses them.
    cache: dict[str, Any] = field(default_factory=dict)


# Where each token's K/V row goes: the first two indices of a [A, B, Hkv, D] cache. Slot and
# position for the vattention layout, block and offset for the paged pool.
KVIndex = tuple[torch.Tensor, torch.Tensor]


def slot_index(meta: AttentionMetadata) -> KVIndex:
    """The vattention layout: token t's K/V row is [slot, position]."""
    return meta.slot_of_token, meta.positions


def store_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             index: KVIndex) -> None:
    """Write the step's K/V [T, Hkv, D] to the cache rows ``index`` names (the reference
    path; on a GPU the fused rotary kernel writes them instead)."""
    k_cache[index] = k
    v_cache[index] = v
