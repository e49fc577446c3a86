"""The interface the engine needs of a KV cache.

Two implementations: ``vattention.KVCache`` (each slot a virtually contiguous range, blocks
mapped under it on demand) and ``PagedKVCache`` (the paged baseline: a block pool and a block
table). A *frame* is the physical memory behind one block; several slots may share one.
The scheduler counts blocks (distinct frames in use); the runner asks for them with
``ensure``; attention reads ``layer(i)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch


class KVCache(Protocol):
    max_slots: int
    max_len: int

    @property
    def num_blocks(self) -> int:
        """Blocks the physical budget holds."""
        ...

    @property
    def tokens_per_block(self) -> int: ...

    def alloc_slot(self, shared: Sequence[int] = ()) -> int:
        """Take a free slot; its blocks ``0..len(shared)-1`` are backed by the frames
        ``shared`` (full blocks in use already, never written again)."""
        ...

    def frame_of(self, slot: int, block: int) -> int:
        """The frame (physical memory of one block) backing a block ``slot`` owes."""
        ...

    def hold(self, frame: int) -> None:
        """The prefix cache's reference on a frame in use: its content outlives its slots,
        and it is not reused until ``release``. At most one hold per frame."""
        ...

    def release(self, frame: int) -> None:
        """Drop the hold; the frame is free once no live slot owes it."""
        ...

    def ensure(self, slot: int, num_tokens: int) -> None:
        """Blocks back tokens ``[0, num_tokens)`` of ``slot`` (the scheduler has counted
        them, so this never runs out)."""
        ...

    def reserve_ahead(self, slot: int, num_tokens: int) -> None:
        """A hint that ``slot`` will grow to ``num_tokens`` within a few steps."""
        ...

    def commit(self) -> None:
        """Make this step's block changes visible to the device before its kernels run."""
        ...

    def free_slot(self, slot: int) -> None: ...

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
