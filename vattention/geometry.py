"""Page geometry: how many tokens one block covers and what it costs.

The engine needs these numbers before the cache exists (to turn a memory budget into a
number of slots and pages), so they are computed by a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("per_layer", "mega")


@dataclass(frozen=True)
class PageGeometry:
    """Sizes derived from the model shape, the layout and the physical page size.

    ``page_bytes`` is the size of one physical page (the mapping granularity). A *block*
    grows one slot by ``tokens_per_block`` tokens in every layer, for K and V; it costs
    ``block_bytes`` of physical memory (``pages_per_block`` physical pages).
    """

    layout: str
    page_bytes: int
    tokens_per_block: int
    pages_per_block: int
    token_bytes: int  # bytes one token occupies across all layers, K and V

    @property
    def block_bytes(self) -> int:
        return self.pages_per_block * self.page_bytes

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to cover tokens ``[0, num_tokens)`` of one slot."""
        return -(-num_tokens // self.tokens_per_block)

    def padded_len(self, max_len: int) -> int:
        """``max_len`` rounded up so that each slot spans a whole number of pages."""
        return self.blocks_for(max_len) * self.tokens_per_block


def plan_geometry(
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    layout: str = "per_layer",
    page_bytes: int = 2 * 1024 * 1024,
) -> PageGeometry:
    """Compute the page geometry of a cache; raises ValueError on impossible shapes."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    for name, value in (
        ("num_layers", num_layers),
        ("num_kv_heads", num_kv_heads),
        ("head_dim", head_dim),
        ("page_bytes", page_bytes),
    ):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    elem = torch.tensor([], dtype=dtype).element_size()
    row = num_kv_heads * head_dim * elem  # one token of one layer of K (or V)
    if layout == "per_layer":
        per_page_row = row
        pages_per_block = 2 * num_layers
    else:
        per_page_row = row * num_layers
        pages_per_block = 2
    if page_bytes % per_page_row != 0:
        raise ValueError(
            f"page_bytes {page_bytes} is not a multiple of one token's row ({per_page_row} bytes) "
            f"in the {layout} layout; pick a page size that is a multiple of it"
        )
    return PageGeometry(
        layout=layout,
        page_bytes=page_bytes,
        tokens_per_block=page_bytes // per_page_row,
        pages_per_block=pages_per_block,
        token_bytes=2 * num_layers * row,
    )
