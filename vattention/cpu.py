"""The host backend: one anonymous ``mmap`` reservation per cache tensor.

``MAP_NORESERVE`` keeps the kernel from setting swap aside for the reservation, so a cache
much larger than RAM costs only the pages that are touched. Pages become resident on first
write (the kernel maps on fault, so ``map`` has nothing to call) and go back to the kernel
with ``madvise(MADV_DONTNEED)``. Which pages are mapped is tracked anyway, so misuse (a
page mapped twice, an unmapped page released) fails here exactly as it does on CUDA.
"""

from __future__ import annotations

import mmap

import torch

from vattention.errors import VAttentionError
from vattention.views import CacheShape, layer_views

# Linux values; Python's mmap module only exports MAP_NORESERVE from 3.13 on.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_HUGE_PAGE = 2 * 1024 * 1024


class HostMapper:
    def __init__(self, shape: CacheShape) -> None:
        page = shape.geometry.page_bytes
        if page % mmap.PAGESIZE:
            raise ValueError(
                f"the cpu backend needs a page_bytes that is a multiple of the OS page "
                f"({mmap.PAGESIZE} bytes), got {page}"
            )
        self._page = page
        self._maps: list[mmap.mmap] = []
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        for _ in range(shape.num_reservations):
            m = mmap.mmap(
                -1, shape.reservation_bytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
            if page % _HUGE_PAGE:
                # A transparent huge page would make one touched token cost 2 MiB of RSS
                # and outlive a page-sized release.
                m.madvise(mmap.MADV_NOHUGEPAGE)
            self._maps.append(m)
        bases = [torch.frombuffer(m, dtype=shape.dtype) for m in self._maps]
        self._layers = layer_views(shape, bases)
        self._state = bytearray(shape.pages_per_reservation)  # 1 = mapped

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layers[i]

    def map(self, first_page: int, count: int) -> None:
        end = first_page + count
        if self._state.count(1, first_page, end):
            raise VAttentionError(f"pages [{first_page}, {end}) are already partly mapped")
        self._state[first_page:end] = b"\x01" * count

    def unmap(self, first_page: int, count: int) -> None:
        end = first_page + count
        if self._state.count(0, first_page, end):
            raise VAttentionError(f"pages [{first_page}, {end}) are not all mapped")
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED, first_page * self._page, count * self._page)
        self._state[first_page:end] = bytes(count)

    def mapped_pages(self) -> int:
        return len(self._state) - self._state.count(0)

    def close(self) -> None:
        # Give the memory back now, but leave the unmapping to the garbage collector:
        # torch.frombuffer does not pin the buffer export, so mmap.close() would succeed
        # under a view somebody still holds and turn it into a dangling pointer.
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED)
        self._layers = []
        self._maps = []
