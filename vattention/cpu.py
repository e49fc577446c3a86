"""The host backend: anonymous ``mmap`` reservations; shared frames in a memory file.

Each cache tensor gets an anonymous ``MAP_NORESERVE`` reservation, so a cache much larger
than RAM costs only what is touched. A frame starts out *private*: its pages are the
anonymous memory under the one slot page where it was first mapped, so growing a slot
costs no system call (the kernel maps on first write). A frame becomes *published* when
it must outlive or leave that page: when it is mapped under a second page (a shared
prefix) or unmapped while held. Publishing copies its pages into one sparse ``memfd``
(the page of frame ``f`` in reservation ``r`` at file offset ``(r * num_frames + f) *
page_bytes``) and maps the file there with ``mmap(MAP_SHARED | MAP_FIXED)``; every
mapping of a published frame sees the same bytes, as on CUDA. Unmapping a private page
gives its memory back with ``MADV_DONTNEED``; unmapping a published one maps fresh
anonymous memory back over the range (torch views point there, so it must stay valid);
discarding a free published frame punches a hole in the file. Which pages are mapped is
tracked, so misuse (a page mapped twice, an unmapped page released) fails here exactly as
it does on CUDA.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from collections.abc import Collection, Sequence

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
        self._frame_at = [-1] * shape.pages_per_reservation  # page -> frame mapped there
        self._home: dict[int, int] = {}  # private frame -> the page holding its memory
        self._published = bytearray(num_frames)
        # The pager calls for different slots concurrently, and a frame's state (private
        # under one slot's page, or published) spans slots.
        self._lock = threading.Lock()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layers[i]

    def map(self, first_page: int, frames: Sequence[int]) -> None:
        with self._lock:
            end = first_page + len(frames)
            if any(f >= 0 for f in self._frame_at[first_page:end]):
                raise VAttentionError(f"pages [{first_page}, {end}) are already partly mapped")
            bad = [f for f in frames if not 0 <= f < self._num_frames]
            if bad:
                raise VAttentionError(f"frames {bad} are outside [0, {self._num_frames})")
            if len(set(frames)) != len(frames):
                raise VAttentionError(f"frames {list(frames)} repeat")
            shared: list[tuple[int, int]] = []  # (page, frame) mapped from the file
            fresh: list[tuple[int, int]] = []
            for i, frame in enumerate(frames):
                if self._published[frame] or frame in self._home:
                    shared.append((first_page + i, frame))
                else:
                    fresh.append((first_page + i, frame))
            done: list[int] = []
            try:
                for page, frame in shared:
                    if not self._published[frame]:
                        self._publish(frame)
                    self._map_file(page, frame)
                    done.append(page)
            except VAttentionError:
                for page in done:
                    self._anonymous(page)
                raise
            for page, frame in shared:
                self._frame_at[page] = frame
            for page, frame in fresh:  # its anonymous page is already there
                self._home[frame] = page
                self._frame_at[page] = frame

    def fence(self) -> None:
        return None  # host work is synchronous: nothing is in flight

    def unmap(self, first_page: int, count: int, keep: Collection[int] = ()) -> None:
        with self._lock:
            end = first_page + count
            if any(f < 0 for f in self._frame_at[first_page:end]):
                raise VAttentionError(f"pages [{first_page}, {end}) are not all mapped")
            for page in range(first_page, end):
                frame = self._frame_at[page]
                if not self._published[frame] and frame in keep:
                    self._publish(frame)  # a held frame's content outlives its pages
                if self._published[frame]:
                    self._anonymous(page)
                else:
                    del self._home[frame]
                    self._release_private(page)
                self._frame_at[page] = -1

    def discard(self, frames: Sequence[int]) -> None:
        with self._lock:
            for frame in frames:
                if self._published[frame]:
                    for r in range(len(self._addrs)):
                        _punch(self._fd, self._offset(r, frame), self._page)
                    self._published[frame] = 0

    def backing_bytes(self) -> int:
        """Memory the published frames hold in the file, mapped or not (what ``discard``
        gives back; private frames live in the reservations' anonymous memory)."""
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

    # -- internals ---------------------------------------------------------------------------
    def _offset(self, reservation: int, frame: int) -> int:
        return (reservation * self._num_frames + frame) * self._page

    def _publish(self, frame: int) -> None:
        """Move a private frame's pages into the file and map the file where they were."""
        page = self._home[frame]
        start = page * self._page
        for r, m in enumerate(self._maps):
            data = memoryview(m)[start : start + self._page]
            try:
                if os.pwrite(self._fd, data, self._offset(r, frame)) != self._page:
                    raise VAttentionError(f"short write publishing frame {frame}")
            finally:
                data.release()
        self._map_file(page, frame)
        del self._home[frame]
        self._published[frame] = 1

    def _map_file(self, page: int, frame: int) -> None:
        for r, base in enumerate(self._addrs):
            _mmap_fixed(
                base + page * self._page,
                self._page,
                mmap.MAP_SHARED,
                self._fd,
                self._offset(r, frame),
            )

    def _release_private(self, page: int) -> None:
        """A private page's memory goes back to the kernel; the page reads zeros after."""
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED, page * self._page, self._page)

    def _anonymous(self, page: int) -> None:
        """Put fresh anonymous memory under ``page`` (in place of the file)."""
        offset = page * self._page
        for base, m in zip(self._addrs, self._maps, strict=True):
            _mmap_fixed(base + offset, self._page, _ANONYMOUS, -1, 0)
            if self._no_huge:
                m.madvise(mmap.MADV_NOHUGEPAGE, offset, self._page)
