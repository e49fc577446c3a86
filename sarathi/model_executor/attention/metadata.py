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


def write_slots(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                meta: AttentionMetadata) -> None:
    """Write the step's K/V [T, Hkv, D] at (slot, position) of a slot-layout cache."""
    k_cache[meta.slot_of_token, meta.positions] = k
    v_cache[meta.slot_of_token, meta.positions] = v
