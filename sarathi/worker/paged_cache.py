"""The paged KV cache: the baseline vAttention is measured against.

This is vLLM's design. Each layer's K and V live in a pool of fixed-size blocks
``[num_blocks, block_tokens, kv_heads, head_dim]`` allocated up front; a sequence (a slot)
owns a list of blocks, and its block table row says which block holds tokens
``[i * block_tokens, (i + 1) * block_tokens)``. Attention kernels translate every position
through that table (``triton_decode`` and ``triton_prefill`` with ``PAGED=True``).

The class offers the engine's ``KVCache`` interface (``sarathi/worker/kv_cache.py``), as
``vattention.KVCache`` does, so the engine runs unchanged on either cache. A pool block is
a *frame*: several slots' table rows may name the same block (a shared prompt prefix), and
a block is reference counted by the slots that owe it plus the prefix cache's hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vattention.errors import OutOfPagesError, VAttentionError
from vattention.uses import FrameUses


def paged_block_bytes(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, block_tokens: int
) -> int:
    """Bytes of one block: K and V of ``block_tokens`` tokens in every layer."""
    elem = torch.tensor([], dtype=dtype).element_size()
    return 2 * num_layers * num_kv_heads * head_dim * elem * block_tokens


class PagedKVCache:
    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        max_slots: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
        block_tokens: int,
        num_blocks: int,
    ) -> None:
        if block_tokens <= 0 or num_blocks <= 0 or max_slots <= 0 or max_len <= 0:
            raise ValueError(
                f"invalid paged cache: block_tokens {block_tokens}, num_blocks "
                f"{num_blocks}, max_slots {max_slots}, max_len {max_len}"
            )
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_slots = max_slots
        self.max_len = max_len
        self.block_tokens = block_tokens
        self.num_blocks = num_blocks
        self.blocks_per_slot = math.ceil(max_len / block_tokens)
        self.token_bytes = paged_block_bytes(num_layers, num_kv_heads, head_dim, dtype, 1)
        self.block_bytes = self.token_bytes * block_tokens
        # Zeroed, not empty: the CPU fallback gathers whole blocks, and a NaN left in an
        # unwritten row would survive the attention mask (0 * NaN).
        shape = (num_blocks, block_tokens, num_kv_heads, head_dim)
        self._layers = [
            (
                torch.zeros(shape, dtype=dtype, device=self.device),
                torch.zeros(shape, dtype=dtype, device=self.device),
            )
            for _ in range(num_layers)
        ]
        # int32, as the kernels read it. Rows of free slots point at block 0: never read.
        self.block_tables = torch.zeros(
            max_slots, self.blocks_per_slot, dtype=torch.int32, device=self.device
        )
        self._blocks: list[list[int]] = [[] for _ in range(max_slots)]
        self._tokens = [0] * max_slots
        self._taken = [False] * max_slots
        self._free_slots = list(range(max_slots - 1, -1, -1))  # pop() gives the lowest
        self._free_blocks = list(range(num_blocks - 1, -1, -1))
        self._uses = FrameUses(num_blocks)
        self._held = [False] * num_blocks
        # Kept as they change: stats() runs after every engine step.
        self._num_held = 0
        self._pending: list[tuple[int, int, int]] = []  # (slot, index, block) not yet on device
        self._closed = False

    # -- what the engine reads ---------------------------------------------------------------
    @property
    def tokens_per_block(self) -> int:
        return self.block_tokens

    @property
    def layout(self) -> str:
        return "paged"

    @property
    def num_free_blocks(self) -> int:
        return len(self._free_blocks)

    # -- slots ---------------------------------------------------------------------------------
    def alloc_slot(self, shared: Sequence[int] = ()) -> int:
        """Take the lowest free slot; its first ``len(shared)`` table entries name the
        blocks ``shared`` (in use already: owed by a live slot or held)."""
        self._check_open()
        if not self._free_slots:
            raise VAttentionError(f"all {self.max_slots} slots are taken")
        shared = list(shared)
        if len(shared) > self.blocks_per_slot:
            raise VAttentionError(
                f"{len(shared)} shared blocks exceed the slot's {self.blocks_per_slot}"
            )
        if len(set(shared)) != len(shared):
            raise VAttentionError(f"shared blocks repeat: {shared}")
        for block in shared:
            self._check_block(block)
            if not self._uses.in_use(block):
                raise VAttentionError(f"shared block {block} is not in use (owed or held)")
        slot = self._free_slots.pop()
        self._taken[slot] = True
        for index, block in enumerate(shared):
            self._uses.add(block)
            self._pending.append((slot, index, block))
        self._blocks[slot] = shared
        self._tokens[slot] = len(shared) * self.block_tokens
        return slot

    def ensure(self, slot: int, num_tokens: int) -> None:
        """Give ``slot`` blocks for tokens ``[0, num_tokens)``; the device table follows at
        the next ``commit``."""
        self._check_slot(slot)
        if num_tokens > self.max_len:
            raise VAttentionError(f"{num_tokens} tokens exceed max_len {self.max_len}")
        blocks = self._blocks[slot]
        need = math.ceil(num_tokens / self.block_tokens) - len(blocks)
        if need > len(self._free_blocks):
            raise OutOfPagesError(
                f"slot {slot} needs {need} more blocks for {num_tokens} tokens, only "
                f"{len(self._free_blocks)} of {self.num_blocks} are free"
            )
        for _ in range(max(0, need)):
            block = self._free_blocks.pop()
            self._uses.add(block)
            self._pending.append((slot, len(blocks), block))
            blocks.append(block)
        self._tokens[slot] = max(self._tokens[slot], num_tokens)

    def commit(self) -> None:
        """Copy the block-table entries made since the last commit to the device (one
        transfer per step, before the step's kernels read the table)."""
        if not self._pending:
            return
        entries = torch.tensor(self._pending, dtype=torch.int32).t()
        self._pending = []
        if self.device.type == "cuda":
            entries = entries.pin_memory().to(self.device, non_blocking=True)
        self.block_tables[entries[0].long(), entries[1].long()] = entries[2]

    def reserve_ahead(self, slot: int, num_tokens: int) -> None:
        """Nothing to map ahead: blocks are taken from a pool allocated up front."""

    def free_slot(self, slot: int) -> None:
        self._check_slot(slot)
        for block in self._blocks[slot]:
            self._unref(block)
        self._pending = [e for e in self._pending if e[0] != slot]
        self._blocks[slot] = []
        self._tokens[slot] = 0
        self._taken[slot] = False
        self._free_slots.append(slot)
        self._free_slots.sort(reverse=True)

    def frame_of(self, slot: int, block: int) -> int:
        """The pool block at entry ``block`` of ``slot``'s table (a block the slot owes)."""
        self._check_slot(slot)
        blocks = self._blocks[slot]
        if not 0 <= block < len(blocks):
            raise VAttentionError(f"slot {slot} owes blocks [0, {len(blocks)}), not {block}")
        return blocks[block]

    def hold(self, frame: int) -> None:
        """The prefix cache's reference on pool block ``frame``, which a live slot owes:
        it is not reused until ``release``, whatever happens to its slots."""
        self._check_open()
        self._check_block(frame)
        if self._held[frame]:
            raise VAttentionError(f"frame {frame} is already held")
        if not self._uses.in_use(frame):
            raise VAttentionError(f"frame {frame} is not in use by any slot")
        self._held[frame] = True
        self._num_held += 1
        self._uses.add(frame)

    def release(self, frame: int) -> None:
        self._check_open()
        self._check_block(frame)
        if not self._held[frame]:
            raise VAttentionError(f"frame {frame} is not held")
        self._held[frame] = False
        self._num_held -= 1
        self._unref(frame)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_open()
        return self._layers[i]

    def stats(self) -> dict[str, Any]:
        """The same keys as ``vattention.KVCache.stats``: a block holds ``block_tokens``
        tokens of every layer and is its own (only) page; ``mapped_bytes`` is the distinct
        blocks owed by live slots or held (the pool itself is ``pool_bytes``, all allocated
        at start), ``virtual_mapped_bytes`` the blocks owed counted per slot."""
        used = self.num_blocks - len(self._free_blocks)
        shared = self._uses.shared
        return {
            "backend": "paged",
            "layout": "paged",
            "page_bytes": self.block_bytes,
            "tokens_per_block": self.block_tokens,
            "blocks_total": self.num_blocks,
            "blocks_used": used,
            "blocks_free": len(self._free_blocks),
            "pages_total": self.num_blocks,
            "pages_mapped": used,
            "pages_free": len(self._free_blocks),
            "mapped_bytes": used * self.block_bytes,
            "virtual_mapped_bytes": sum(map(len, self._blocks)) * self.block_bytes,
            "frames_held": self._num_held,
            "frames_shared": shared,
            "shared_mapped_bytes": shared * self.block_bytes,
            "token_bytes": sum(self._tokens) * self.token_bytes,
            "pool_bytes": self.num_blocks * self.block_bytes,
            "slots_used": sum(self._taken),
            "max_slots": self.max_slots,
        }

    def close(self) -> None:
        self._layers = []
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise VAttentionError("the cache is closed")

    def _check_block(self, block: int) -> None:
        if not 0 <= block < self.num_blocks:
            raise VAttentionError(f"frame {block} is outside [0, {self.num_blocks})")

    def _unref(self, block: int) -> None:
        if self._uses.drop(block):
            self._free_blocks.append(block)

    def _check_slot(self, slot: int) -> None:
        self._check_open()
        if not (0 <= slot < self.max_slots) or not self._taken[slot]:
            raise VAttentionError(f"slot {slot} is not allocated")
