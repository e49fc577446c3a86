"""Drives vattention._C.Space against the fake driver; run by test_extension.py in a
subprocess whose LD_LIBRARY_PATH puts the fake libcuda.so.1 first."""

from __future__ import annotations

import ctypes
import sys
import threading

from vattention import DriverError, VAttentionError
from vattention import _C

PAGE = 65536
fake = ctypes.CDLL("libcuda.so.1")  # the very library the extension dlopens
for name in (
    "fake_live_handles",
    "fake_live_reservations",
    "fake_ctx_refs",
    "fake_ctx_depth",
    "fake_mapped_bytes",
    "fake_access_calls",
):
    getattr(fake, name).restype = ctypes.c_long


def expect(exc: type[BaseException], fn, *args) -> BaseException:
    try:
        fn(*args)
    except exc as caught:
        return caught
    raise AssertionError(f"{fn} did not raise {exc.__name__}")


def leaks() -> tuple[int, int, int, int, int]:
    return (
        fake.fake_live_handles(),
        fake.fake_live_reservations(),
        fake.fake_ctx_refs(),
        fake.fake_ctx_depth(),
        fake.fake_mapped_bytes(),
    )


assert _C.granularity(0) == PAGE
assert expect(DriverError, _C.granularity, 3).name == "CUDA_ERROR_INVALID_DEVICE"
expect(ValueError, _C.Space, 0, PAGE + 4096, 4, 1, 4 * (PAGE + 4096))  # not a granularity multiple

# Basic mapping: three reservations of 4 pages, a pool of 3 frames (9 handles).
space = _C.Space(0, PAGE, 3, 3, 4 * PAGE)
assert (space.num_frames, space.num_pages, space.page_size) == (3, 9, PAGE)
calls = fake.fake_access_calls()
space.map(0, [0, 1])
assert fake.fake_access_calls() - calls == 3  # one access call per reservation, not per page
for r in range(3):
    ctypes.memset(space.base(r) + PAGE, r + 1, PAGE)
    assert ctypes.string_at(space.base(r) + 2 * PAGE - 4, 4) == bytes([r + 1]) * 4
expect(VAttentionError, space.map, 1, [2])  # already mapped
expect(VAttentionError, space.map, 2, [3])  # no such frame
expect(ValueError, space.map, 2, [-1])
expect(TypeError, space.map, 2, 7)
expect(VAttentionError, space.unmap, 2, 1)  # not mapped
expect(VAttentionError, space.map, 3, [0, 1])  # outside the reservation

# Aliasing: frame 1 mapped at pages 1 and 2 is the same memory in every reservation.
space.map(2, [1])
for r in range(3):
    assert ctypes.string_at(space.base(r) + 2 * PAGE, PAGE) == bytes([r + 1]) * PAGE
    ctypes.memset(space.base(r) + 3 * PAGE - 8, 0x70 + r, 8)  # through page 2
    assert ctypes.string_at(space.base(r) + 2 * PAGE - 8, 8) == bytes([0x70 + r]) * 8
assert fake.fake_mapped_bytes() == 3 * 3 * PAGE
space.unmap(1, 2)  # both copies of frame 1
space.map(3, [1])  # the frame kept its content while mapped nowhere
for r in range(3):
    assert ctypes.string_at(space.base(r) + 4 * PAGE - 8, 8) == bytes([0x70 + r]) * 8
    assert ctypes.string_at(space.base(r) + 3 * PAGE, 4) == bytes([r + 1]) * 4
space.unmap(3, 1)
space.unmap(0, 1)
assert fake.fake_mapped_bytes() == 0

# A driver failure half-way through a map rolls back completely.
fake.fake_fail_map_after(4)
err = expect(DriverError, space.map, 0, [0, 1])
assert err.name == "CUDA_ERROR_OUT_OF_MEMORY" and err.call == "cuMemMap"
fake.fake_fail_map_after(-1)
assert fake.fake_mapped_bytes() == 0
space.map(0, [0, 1])  # and the pages are usable again

# The exported capsule keeps the space alive.
refs = sys.getrefcount(space)
capsule = space.dlpack(1)
assert sys.getrefcount(space) == refs + 1
del capsule
assert sys.getrefcount(space) == refs

# Concurrent map/unmap of disjoint page ranges from four threads, each with its own
# frames plus one frame that all of them map at once.
space.unmap(0, 2)
big = _C.Space(0, PAGE, 17, 2, 64 * PAGE)


def churn(i: int) -> None:
    frames = [4 * i, 4 * i + 1, 16, 4 * i + 2, 4 * i + 3]
    for _ in range(300):
        big.map(8 * i, frames)
        big.unmap(8 * i, len(frames))


threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert fake.fake_mapped_bytes() == 0
big.map(0, [0, 16, 2])
big.close()  # closing with pages still mapped unmaps them
space.close()
space.close()  # idempotent
expect(VAttentionError, space.map, 0, [0])  # closed
assert leaks() == (0, 0, 0, 0, 0), leaks()

# A failed construction (the pool does not fit) releases what it had created.
fake.fake_fail_create_after(5)
err = expect(DriverError, _C.Space, 0, PAGE, 4, 2, 4 * PAGE)  # 8 handles
assert err.name == "CUDA_ERROR_OUT_OF_MEMORY" and err.call == "cuMemCreate"
fake.fake_fail_create_after(-1)
assert leaks() == (0, 0, 0, 0, 0), leaks()

# Dropping an unclosed space releases everything too.
space = _C.Space(0, PAGE, 2, 2, 4 * PAGE)
space.map(1, [0, 1])
space.map(3, [1])
del space
assert leaks() == (0, 0, 0, 0, 0), leaks()
print("ok")
