"""The host backend: anonymous ``mmap`` reservations, frames in one shared memory file.

Each cache tensor gets an anonymous ``MAP_NORESERVE`` reservation, so a cache much larger
than RAM costs only what is mapped and touched. The frames live in one sparse
``memfd``: the page of frame ``f`` in reservation ``r`` sits at file offset
``(r * num_frames + f) * page_bytes``, so a run of consecutive frames is one file range per
reservation. Mapping a frame at a page is ``mmap(MAP_SHARED | MAP_FIXED)`` of its file
pages over the reservation: the same frame can appear under several slots (a shared
prefix) and every mapping sees the same bytes, as on CUDA. Unmapping maps fresh anonymous
memory back over the range (torch views point there, so the range must stay valid), and
discarding a free frame punches a hole in the file, which gives its memory back. Pages
become resident on first write. Which pages are mapped is tracked, so misuse (a page
mapped twice, an unmapped page released) fails here exactly as it does on CUDA.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator, Sequence

import torch

from vattention.errors import VAttentionError
from vattention.views import CacheShape, layer_views

# Linux values; Python's mmap module exports neither MAP_FIXED nor (before 3.13)
# MAP_NORESERVE.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_MAP_FIXED = 0x10
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
_ANONYMOUS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
_HUGE_PAGE = 2 * 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.fallocate.restype = ctypes.c_int
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def _mmap_fixed(addr: int, length: int, flags: int, fd: int, offset: int) -> None:
    got = _libc.mmap(addr, length, _PROT_RW, flags | _MAP_FIXED, fd, offset)
    if got != addr:
        err = ctypes.get_errno()
        raise VAttentionError(f"mmap of {length} bytes at {addr:#x} failed: {os.strerror(err)}")


def _punch(fd: int, offset: int, length: int) -> None:
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise VAttentionError(f"fallocate(PUNCH_HOLE) failed: {os.strerror(err)}")


def _runs(frames: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """``(index, first frame, length)`` of each run of consecutive frame numbers."""
    i = 0
    while i < len(frames):
        j = i + 1
        while j < len(frames) and frames[j] == frames[j - 1] + 1:
            j += 1
        yield i, frames[i], j - i
        i = j


class HostMapper:
    shares_frames = True

    def __init__(self, shape: CacheShape, num_frames: int) -> None:
        page = shape.geometry.page_bytes
        if page % mmap.PAGESIZE:
            raise ValueError(
                f"the cpu backend needs a page_bytes that is a multiple of the OS page "
                f"({mmap.PAGESIZE} bytes), got {page}"
            )
        self._page = page
        self._num_frames = num_frames
        # A transparent huge page would make one touched token cost 2 MiB of RSS and
        # outlive a page-sized release.
        self._no_huge = page % _HUGE_PAGE != 0
        self._maps: list[mmap.mmap] = []
        for _ in range(shape.num_reservations):
            m = mmap.mmap(-1, shape.reservation_bytes, flags=_ANONYMOUS, prot=_PROT_RW)
            if self._no_huge:
                m.madvise(mmap.MADV_NOHUGEPAGE)
            self._maps.append(m)
        self._fd = os.memfd_create("vattention-frames", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, shape.num_reservations * num_frames * page)  # sparse
        bases = [torch.frombuffer(m, dtype=shape.dtype) for m in self._maps]
        self._addrs = [b.data_ptr() for b in bases]
        self._layers = layer_views(shape, bases)
        self._state = bytearray(shape.pages_per_reservation)  # 1 = mapped

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layers[i]

    def map(self, first_page: int, frames: Sequence[int]) -> None:
        count = len(frames)
        end = first_page + count
        if self._state.count(1, first_page, end):
            raise VAttentionError(f"pages [{first_page}, {end}) are already partly mapped")
        bad = [f for f in frames if not 0 <= f < self._num_frames]
        if bad:
            raise VAttentionError(f"frames {bad} are outside [0, {self._num_frames})")
        try:
            for index, frame, length in _runs(frames):
                for r, base in enumerate(self._addrs):
                    _mmap_fixed(
                        base + (first_page + index) * self._page,
                        length * self._page,
                        mmap.MAP_SHARED,
                        self._fd,
                        (r * self._num_frames + frame) * self._page,
                    )
        except VAttentionError:
            self._anonymous(first_page, count)
            raise
        self._state[first_page:end] = b"\x01" * count

    def unmap(self, first_page: int, count: int) -> None:
        end = first_page + count
        if self._state.count(0, first_page, end):
            raise VAttentionError(f"pages [{first_page}, {end}) are not all mapped")
        self._anonymous(first_page, count)
        self._state[first_page:end] = bytes(count)

    def discard(self, frames: Sequence[int]) -> None:
        for _, frame, length in _runs(sorted(frames)):
            for r in range(len(self._addrs)):
                _punch(self._fd, (r * self._num_frames + frame) * self._page, length * self._page)

    def backing_bytes(self) -> int:
        """Memory the frames hold now, mapped or not (what ``discard`` gives back)."""
        return os.fstat(self._fd).st_blocks * 512

    def close(self) -> None:
        # Give the memory back now, but leave the unmapping to the garbage collector:
        # torch.frombuffer does not pin the buffer export, so mmap.close() would succeed
        # under a view somebody still holds and turn it into a dangling pointer.
        if self._fd < 0:
            return
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED)
        _punch(self._fd, 0, os.fstat(self._fd).st_size)
        os.close(self._fd)  # the mappings keep the (now empty) file until they go
        self._fd = -1
        self._layers = []
        self._maps = []

    def _anonymous(self, first_page: int, count: int) -> None:
        """Put fresh anonymous memory under pages ``[first_page, first_page + count)``."""
        offset, length = first_page * self._page, count * self._page
        for base, m in zip(self._addrs, self._maps, strict=True):
            _mmap_fixed(base + offset, length, _ANONYMOUS, -1, 0)
            if self._no_huge:
                m.madvise(mmap.MADV_NOHUGEPAGE, offset, length)
