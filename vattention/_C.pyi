"""Types of the compiled extension ``vattention._C`` (csrc/module.cpp); keep the two in step.

The extension is optional (built only where a CUDA toolkit is found), so type checking
must not depend on it being built.
"""

from typing import final

@final
class Space:
    """Reservations of virtual address space and a pool of physical pages on one device."""

    def __init__(
        self,
        device: int,
        page_size: int,
        num_pages: int,
        num_reservations: int,
        reservation_bytes: int,
    ) -> None: ...
    def map(self, first: int, count: int, /) -> None: ...
    def unmap(self, first: int, count: int, /) -> None: ...
    def close(self) -> None: ...
    def free_pages(self) -> int: ...
    def base(self, r: int, /) -> int: ...
    def dlpack(self, r: int, /) -> object:
        """Reservation ``r`` as a DLPack capsule ("dltensor") of bytes."""
    @property
    def num_pages(self) -> int: ...
    @property
    def page_size(self) -> int: ...

def granularity(device: int, /) -> int: ...
