"""The dense backend: every slot's full extent allocated up front.

It is the reference the on-demand backends are tested against, and the fallback where
virtual-memory mapping is unavailable.
"""

from __future__ import annotations

import torch


class DenseBackend:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_slots: int,
                 max_len: int, dtype: torch.dtype, device: torch.device, layout: str) -> None:
        # torch.empty, not zeros: on the host large allocations stay virtual until written,
        # so a generous dense cache does not cost resident memory it never uses.
        if layout == "per_layer":
            shape = (2, num_layers, max_slots, max_len, num_kv_heads, head_dim)
            self._store = torch.empty(shape, dtype=dtype, device=device)
            self._layers = [(self._store[0, i], self._store[1, i]) for i in range(num_layers)]
        else:
            shape = (2, max_slots, max_len, num_layers, num_kv_heads, head_dim)
            self._store = torch.empty(shape, dtype=dtype, device=device)
            self._layers = [(self._store[0, :, :, i], self._store[1, :, :, i])
                            for i in range(num_layers)]

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layers[i]

    def map(self, slot: int, first_unit: int, num_units: int) -> None:
        pass  # memory is always there

    def release(self, slot: int, num_units: int) -> None:
        pass

    def close(self) -> None:
        self._layers = []
        self._store = torch.empty(0)
