"""A shared-memory broadcast ring: one writer (the engine process), several readers (ranks).

A message is written once into shared memory and every reader reads it there, instead of
being sent down one pipe per reader. The ring has ``num_slots`` slots; each holds a small
header (message number, kind, total length, offset, length of this piece) and a payload
area. A message longer than one slot's payload is written in pieces across consecutive
slots, and each reader puts it back together: the ring is a stream, so a message may be
longer than the whole ring (the writer waits while the readers catch up).

Synchronisation is two counting semaphores per reader, so every wait blocks in the OS:

- ``filled[r]``: slots written that reader ``r`` has not read yet (the writer releases it);
- ``free[r]``: slots reader ``r`` has finished with (it releases; the writer takes one per
  reader before reusing a slot, so no slot is overwritten while anyone still reads it).

A semaphore's release and acquire order the memory writes around them, so a reader that
has acquired ``filled[r]`` sees the whole slot. Waits take a timeout and call back between
slices of it, so a dead peer is noticed by the caller's liveness check rather than waited
on forever.
"""

from __future__ import annotations

import contextlib
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

# number, kind, total length, offset of this piece, length of this piece.
_SLOT_HEADER = struct.Struct("<qqqqq")
# The payload starts on a cache line, so copies into it are aligned.
_HEADER_BYTES = 64


@dataclass
class RingMessage:
    kind: int
    number: int
    payload: bytes


@dataclass
class RingHandle:
    """What a reader needs to attach; passed to a rank process as it is started (the
    semaphores can only travel then)."""

    name: str
    num_slots: int
    slot_bytes: int
    filled: list[Any]
    free: list[Any]


class RingWriter:
    """The writing end; it owns the shared memory and unlinks it on ``close``."""

    def __init__(
        self, ctx: Any, num_readers: int, num_slots: int = 4, slot_bytes: int = 1 << 20
    ) -> None:
        if slot_bytes <= _HEADER_BYTES or num_slots < 1 or num_readers < 1:
            raise ValueError("a ring needs readers, slots, and room for a payload in each")
        self._shm = shared_memory.SharedMemory(create=True, size=num_slots * slot_bytes)
        # A program that exits without shutting its engine down still removes the segment
        # (else the resource tracker warns of a leak at exit).
        self._remove = weakref.finalize(self, _remove, self._shm)
        self._buf = _buffer(self._shm)
        self.handle = RingHandle(
            name=self._shm.name,
            num_slots=num_slots,
            slot_bytes=slot_bytes,
            filled=[ctx.Semaphore(0) for _ in range(num_readers)],
            free=[ctx.Semaphore(num_slots) for _ in range(num_readers)],
        )
        self._next = 0  # slots written so far; the next one is this modulo num_slots
        self._closed = False

    def write(
        self,
        kind: int,
        number: int,
        payload: bytes,
        deadline: float,
        check: Callable[[], object],
        check_s: float = 1.0,
    ) -> None:
        """Publish ``payload`` to every reader. Waits for free slots until ``deadline``
        (``time.monotonic()``), calling ``check`` (which raises when a reader is known to
        be dead) every ``check_s`` while it waits; ``TimeoutError`` past the deadline."""
        h = self.handle
        capacity = h.slot_bytes - _HEADER_BYTES
        buf = self._buf
        offset = 0
        while True:  # an empty message still takes one slot: the readers must see it
            piece = payload[offset : offset + capacity]
            self._acquire_all(h.free, deadline, check, check_s)
            base = (self._next % h.num_slots) * h.slot_bytes
            _SLOT_HEADER.pack_into(buf, base, number, kind, len(payload), offset, len(piece))
            start = base + _HEADER_BYTES
            buf[start : start + len(piece)] = piece
            self._next += 1
            for sem in h.filled:
                sem.release()
            offset += len(piece)
            if offset >= len(payload):
                return

    @staticmethod
    def _acquire_all(
        sems: list[Any], deadline: float, check: Callable[[], object], check_s: float
    ) -> None:
        taken: list[Any] = []
        try:
            for sem in sems:
                while not sem.acquire(timeout=max(0.0, min(check_s, deadline - time.monotonic()))):
                    check()
                    if time.monotonic() >= deadline:
                        raise TimeoutError("the ring's readers did not free a slot in time")
                taken.append(sem)
        except BaseException:
            # Interrupted or failed before writing: the slot is given back as it was.
            for sem in taken:
                sem.release()
            raise

    def close(self) -> None:
        """Release and remove the shared memory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._remove()


class RingReader:
    """Reader ``index``'s end, in a rank process."""

    def __init__(self, handle: RingHandle, index: int) -> None:
        self._h = handle
        self._filled = handle.filled[index]
        self._free = handle.free[index]
        self._shm = shared_memory.SharedMemory(name=handle.name)
        self._buf = _buffer(self._shm)
        self._next = 0

    def read(self, alive: Callable[[], bool], check_s: float = 1.0) -> RingMessage | None:
        """The next message, waiting for it as long as ``alive()`` (asked every ``check_s``
        while waiting) holds; None once it does not."""
        number, kind, total, offset, piece = self._read_piece(alive, check_s)
        if piece is None:
            return None
        if offset != 0:
            raise RuntimeError(f"ring out of step: message {number} starts at offset {offset}")
        if len(piece) == total:
            return RingMessage(kind, number, piece)
        whole = bytearray(piece)
        while len(whole) < total:
            more_number, _, _, more_offset, more = self._read_piece(alive, check_s)
            if more is None:
                return None
            # An interrupted writer leaves a message cut short: fail, never splice two.
            if more_number != number or more_offset != len(whole):
                raise RuntimeError(
                    f"ring out of step: message {number} at {len(whole)} of {total} bytes "
                    f"continued by message {more_number} at {more_offset}"
                )
            whole += more
        return RingMessage(kind, number, bytes(whole))

    def _read_piece(
        self, alive: Callable[[], bool], check_s: float
    ) -> tuple[int, int, int, int, bytes | None]:
        while not self._filled.acquire(timeout=check_s):
            if not alive():
                return 0, 0, 0, 0, None
        h = self._h
        base = (self._next % h.num_slots) * h.slot_bytes
        number, kind, total, offset, length = _SLOT_HEADER.unpack_from(self._buf, base)
        start = base + _HEADER_BYTES
        # Copied out so the slot can be reused at once.
        piece = bytes(self._buf[start : start + length])
        self._next += 1
        self._free.release()
        return number, kind, total, offset, piece

    def close(self) -> None:
        self._shm.close()


def _remove(shm: shared_memory.SharedMemory) -> None:
    shm.close()
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()


def _buffer(shm: shared_memory.SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:  # only after close()
        raise ValueError(f"shared memory {shm.name} is closed")
    return buf
