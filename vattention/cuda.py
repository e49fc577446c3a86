"""The CUDA backend: driver-API reservations and a pre-created page pool (``vattention._C``).

The extension does not link libtorch; it exports each reservation as a DLPack capsule of
bytes, which torch wraps as an ordinary CUDA tensor. DLPack rather than
``__cuda_array_interface__`` because it names the device explicitly: torch resolves a
CUDA-array-interface pointer by asking the driver which device owns it, and a reserved but
unmapped range belongs to none. Each tensor keeps the extension object alive, so the
reservation outlives every view even if the cache is dropped without ``close()``.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vattention.errors import VAttentionError
from vattention.views import CacheShape, layer_views

if TYPE_CHECKING:
    from vattention._C import Space


def _load() -> types.ModuleType:
    from vattention import _C

    return _C


def _ordinal(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def granularity(device: torch.device) -> int:
    """The driver's physical page granularity on ``device`` (2 MiB on current GPUs)."""
    return _load().granularity(_ordinal(device))


@dataclass
class EventFence:
    """Work queued on the current stream when the fence was made."""

    event: torch.cuda.Event

    def done(self) -> bool:
        return self.event.query()

    def wait(self) -> None:
        self.event.synchronize()


class DeviceMapper:
    shares_frames = True

    def __init__(self, shape: CacheShape, device: torch.device, num_frames: int) -> None:
        ordinal = _ordinal(device)
        self._device = torch.device("cuda", ordinal)
        # Make torch create (and bind) the device's primary context first: the extension
        # retains that same context, so kernels launched by torch see our mappings.
        torch.cuda.init()
        with torch.cuda.device(ordinal):
            torch.cuda.synchronize()
        self._space: Space = _load().Space(
            ordinal,
            shape.geometry.page_bytes,
            num_frames,
            shape.num_reservations,
            shape.reservation_bytes,
        )
        bases = [
            torch.from_dlpack(self._space.dlpack(r)).view(shape.dtype)
            for r in range(shape.num_reservations)
        ]
        if bases and bases[0].device != torch.device("cuda", ordinal):
            raise VAttentionError(f"reservation landed on {bases[0].device}, not cuda:{ordinal}")
        self._layers = layer_views(shape, bases)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layers[i]

    def map(self, first_page: int, frames: Sequence[int]) -> None:
        self._space.map(first_page, frames)

    def fence(self) -> EventFence:
        # On this device's stream, whichever device is current: kernels run where the
        # cache lives.
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self._device))
        return EventFence(event)

    def unmap(self, first_page: int, count: int, keep: Collection[int] = ()) -> None:
        # ``keep`` needs nothing: a pool handle's memory outlives its mappings. No device
        # sync: the pager has waited on the fence of the last work that used the pages.
        self._space.unmap(first_page, count, False)

    def discard(self, frames: Sequence[int]) -> None:
        pass  # the pool is the budget: a free frame keeps its handles for the next map

    def close(self) -> None:
        self._layers = []
        self._space.close()
