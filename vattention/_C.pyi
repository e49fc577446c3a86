"""Types of the compiled extension ``vattention._C`` (csrc/module.cpp); keep the two in step.

The extension is optional (built only where a CUDA toolkit is found), so type checking
must not depend on it being built.
"""

from collections.abc import Sequence
from typing import final

@final
class Space:
    """Reservations of virtual address space and a pool of physical pages on one device.

    The pool is ``num_frames`` frames of one page per reservation; the caller keeps the free
    list, and a frame may be mapped at several page ranges at once."""

    def __init__(
        self,
        device: int,
        page_size: int,
        num_frames: int,
        num_reservations: int,
        reservation_bytes: int,
    ) -> None: ...
    def map(self, first: int, frames: Sequence[int], /) -> None:
        """Map ``frames[i]`` at page ``first + i`` of every reservation."""
    def unmap(self, first: int, count: int, synchronize: bool = True, /) -> None:
        """Unmap pages ``[first, first + count)`` of every reservation; with
        ``synchronize``, after all work queued on the device."""
    def close(self) -> None: ...
    def base(self, r: int, /) -> int: ...
    def dlpack(self, r: int, /) -> object:
        """Reservation ``r`` as a DLPack capsule ("dltensor") of bytes."""
    @property
    def num_frames(self) -> int: ...
    @property
    def num_pages(self) -> int: ...
    @property
    def page_size(self) -> int: ...

def granularity(device: int, /) -> int: ...
