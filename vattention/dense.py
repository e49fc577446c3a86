"""The dense backend: every slot's full extent allocated up front.

It is the reference the on-demand backends are tested against, and the fallback where
virtual-memory mapping is unavailable. It runs under the same pager as the others, so its
accounting is identical; only mapping is free. Memory sits at fixed addresses per page, so
a frame cannot be mapped under two slots: no prefix sharing here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from vattention.views import CacheShape, layer_views


class DenseMapper:
    shares_frames = False

    def __init__(self, shape: CacheShape, device: torch.device) -> None:
        # torch.empty, not zeros: on the host large allocations stay virtual until written,
        # so a generous dense cache does not cost resident memory it never uses.
        elem = torch.tensor([], dtype=shape.dtype).element_size()
        numel = shape.reservation_bytes // elem
        bases = [
            torch.empty(numel, dtype=shape.dtype, device=device)
            for _ in range(shape.num_reservations)
        ]
        self._layers = layer_views(shape, bases)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layers[i]

    def map(self, first_page: int, frames: Sequence[int]) -> None:
        pass  # memory is always there

    def fence(self) -> None:
        return None  # host work is synchronous: nothing is in flight

    def unmap(self, first_page: int, count: int, keep: Collection[int] = ()) -> None:
        pass

    def discard(self, frames: Sequence[int]) -> None:
        pass

    def close(self) -> None:
        self._layers = []
