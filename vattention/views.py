"""How the cache tensors sit in their virtual reservations.

Every on-demand backend reserves one range per cache tensor and numbers pages the same
way in each: block ``u`` of slot ``s`` is page ``s * blocks_per_slot + u`` of
every reservation. That single rule lets the pager speak in page numbers while the
backends only differ in how they reserve and back memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vattention.geometry import PageGeometry


@dataclass(frozen=True)
class CacheShape:
    """Everything a backend needs to lay the cache out."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_slots: int
    blocks_per_slot: int
    dtype: torch.dtype
    geometry: PageGeometry

    @property
    def padded_len(self) -> int:
        return self.blocks_per_slot * self.geometry.tokens_per_block

    @property
    def num_reservations(self) -> int:
        # per_layer: K and V of every layer; mega: one K and one V for all layers.
        return 2 * self.num_layers if self.geometry.layout == "per_layer" else 2

    @property
    def pages_per_reservation(self) -> int:
        return self.max_slots * self.blocks_per_slot

    @property
    def reservation_bytes(self) -> int:
        return self.pages_per_reservation * self.geometry.page_bytes

    def page_of(self, slot: int, block: int) -> int:
        return slot * self.blocks_per_slot + block


def layer_views(
    shape: CacheShape, bases: list[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer ``(k, v)`` views ``[max_slots, padded_len, heads, dim]`` over flat bases.

    ``bases`` holds one flat tensor of ``shape.dtype`` per reservation, in the order
    K0, V0, K1, V1, ... (per_layer) or K, V (mega).
    """
    if len(bases) != shape.num_reservations:
        raise ValueError(f"expected {shape.num_reservations} reservations, got {len(bases)}")
    s, n, h, d = shape.max_slots, shape.padded_len, shape.num_kv_heads, shape.head_dim
    if shape.geometry.layout == "per_layer":
        full = [b[: s * n * h * d].view(s, n, h, d) for b in bases]
        return [(full[2 * i], full[2 * i + 1]) for i in range(shape.num_layers)]
    num_layers = shape.num_layers
    k, v = (b[: s * n * num_layers * h * d].view(s, n, num_layers, h, d) for b in bases)
    return [(k[:, :, i], v[:, :, i]) for i in range(num_layers)]
