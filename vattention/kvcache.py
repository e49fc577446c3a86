"""``KVCache``: the front of the cache that every backend shares.

The front owns the bookkeeping (which slots are taken, which frames each slot owes, which
frames the prefix cache holds, how many are free under the budget); the pager
(``vattention.pager``) decides which frames are resident where, and a backend owns the
memory and maps it. Keeping the accounting in
one place means the dense reference, the CPU backend and the CUDA backend cannot disagree
about what "out of pages" means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vattention.backends import (
    available_backends,
    create_mapper,
    default_page_bytes,
    resolve_backend,
)
from vattention.errors import OutOfPagesError, VAttentionError
from vattention.geometry import PageGeometry, plan_geometry
from vattention.pager import Pager
from vattention.uses import FrameUses
from vattention.views import CacheShape

__all__ = ["KVCache", "available_backends"]


class KVCache:
    """K and V storage for ``max_slots`` sequences of up to ``max_len`` tokens.

    ``layer(i)`` returns K and V views shaped ``[max_slots, max_len, num_kv_heads, head_dim]``;
    only tokens covered by ``ensure`` may be written or read.
    """

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        max_slots: int,
        max_len: int,
        dtype: torch.dtype = torch.float16,
        device: str | torch.device = "cpu",
        layout: str = "per_layer",
        page_bytes: int | None = None,
        memory_budget: int | None = None,
        backend: str = "auto",
        *,
        page_size: int | None = None,
    ) -> None:
        """``page_bytes``: the physical page size (default: the smallest the backend maps
        that holds whole token rows); ``page_size`` is its former name, still accepted."""
        if page_bytes is None:
            page_bytes = page_size
        if max_slots <= 0 or max_len <= 0:
            raise ValueError(f"max_slots and max_len must be positive, got {max_slots}, {max_len}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.backend_name = resolve_backend(backend, self.device)
        self.dtype = dtype
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_slots = max_slots
        if page_bytes is None:
            elem = torch.tensor([], dtype=dtype).element_size()
            row = num_kv_heads * head_dim * elem * (num_layers if layout == "mega" else 1)
            page_bytes = default_page_bytes(self.backend_name, self.device, row)
        self.geometry: PageGeometry = plan_geometry(
            num_layers, num_kv_heads, head_dim, dtype, layout, page_bytes
        )
        self.max_len = max_len
        self.blocks_per_slot = self.geometry.blocks_for(max_len)
        full = max_slots * self.blocks_per_slot
        if memory_budget is None:
            self.num_blocks = full
        else:
            self.num_blocks = min(full, int(memory_budget) // self.geometry.block_bytes)
            if self.num_blocks <= 0:
                raise ValueError(
                    f"memory_budget {memory_budget} bytes is smaller than one block "
                    f"({self.geometry.block_bytes} bytes)"
                )
        self._owed: list[list[int]] = [[] for _ in range(max_slots)]  # frames, by block
        self._tokens = [0] * max_slots  # tokens covered per slot (for token_bytes)
        self._taken = [False] * max_slots
        self._free_slots = list(range(max_slots - 1, -1, -1))  # pop() gives the lowest
        # Per frame: live slots that owe it plus its hold. The budget counts frames in use
        # (uses > 0) once each, however many slots share them.
        self._uses = FrameUses(self.num_blocks)
        self._used_blocks = 0
        shape = CacheShape(
            num_layers,
            num_kv_heads,
            head_dim,
            max_slots,
            self.blocks_per_slot,
            dtype,
            self.geometry,
        )
        mapper = create_mapper(self.backend_name, shape, self.device, self.num_blocks)
        self.shares_frames: bool = mapper.shares_frames
        self._pager: Pager | None = Pager(mapper, shape, self.num_blocks)
        # Backends size slots to whole pages; callers see exactly max_len tokens.
        self._views = [
            (k[:, :max_len], v[:, :max_len])
            for k, v in (mapper.layer(i) for i in range(num_layers))
        ]

    # -- geometry --------------------------------------------------------------------------
    @property
    def tokens_per_block(self) -> int:
        return self.geometry.tokens_per_block

    @property
    def layout(self) -> str:
        return self.geometry.layout

    @property
    def num_free_blocks(self) -> int:
        return self.num_blocks - self._used_blocks

    # -- slots -----------------------------------------------------------------------------
    def alloc_slot(self, shared: Sequence[int] = ()) -> int:
        """Take a free slot; raises VAttentionError when all are taken.

        Blocks ``0..len(shared)-1`` of the slot are backed by the frames ``shared``, which
        must be in use already (owed by a live slot or held) and are never written again;
        the slot owes those blocks at once and grows past them with fresh frames. What a
        previous owner left mapped under the slot is reused where it may be written.

        The slot is the free one that still has the longest run of ``shared`` mapped (then
        opening it needs the fewest driver calls), preferring one whose last owner's
        kernels have finished, then the lowest.
        """
        pager = self._open_pager()
        if not self._free_slots:
            raise VAttentionError(f"all {self.max_slots} slots are taken")
        shared = list(shared)
        if shared:
            self._check_shareable(shared)
        slot = pager.best_slot(self._free_slots[::-1], shared)
        pager.open_slot(slot, shared)
        self._free_slots.remove(slot)
        self._taken[slot] = True
        self._owed[slot] = shared
        self._tokens[slot] = len(shared) * self.tokens_per_block
        for frame in shared:
            self._uses.add(frame)
        return slot

    def ensure(self, slot: int, num_tokens: int) -> None:
        """Make sure pages back tokens ``[0, num_tokens)`` of ``slot``."""
        pager = self._open_pager()
        self._check_slot(slot)
        if num_tokens > self.max_len:
            raise VAttentionError(f"{num_tokens} tokens exceed max_len {self.max_len}")
        need = self.geometry.blocks_for(num_tokens)
        have = len(self._owed[slot])
        if need > have:
            grow = need - have
            if grow > self.num_free_blocks:
                raise OutOfPagesError(
                    f"slot {slot} needs {grow} more blocks for {num_tokens} tokens, "
                    f"only {self.num_free_blocks} of {self.num_blocks} are free"
                )
            pager.grow(slot, need)
            # The pager grows a slot with private frames only (fresh, or a previous
            # owner's that nobody else maps or holds): each is a new frame in use.
            fresh = pager.frames(slot, have, need)
            for frame in fresh:
                self._uses.add(frame)
            self._owed[slot].extend(fresh)
            self._used_blocks += grow
        self._tokens[slot] = max(self._tokens[slot], num_tokens)

    def reserve_ahead(self, slot: int, num_tokens: int) -> None:
        """Hint that ``slot`` will hold ``num_tokens`` tokens within the next steps.

        A background thread maps the pages so that the ``ensure`` that later asks for them
        returns without a driver call. It takes no budget: the hint only uses pages that
        are free (or cached under free slots), and ``ensure`` may take them back for
        another slot. Tokens past ``max_len`` are ignored.
        """
        pager = self._open_pager()
        self._check_slot(slot)
        blocks = self.geometry.blocks_for(min(num_tokens, self.max_len))
        pager.reserve_ahead(slot, blocks)

    def wait_ahead(self, timeout: float | None = None) -> bool:
        """Block until the hinted mapping is done; False if ``timeout`` seconds ran out."""
        return self._open_pager().wait_ahead(timeout)

    def free_slot(self, slot: int) -> None:
        """Return a slot and its frames; its contents are undefined afterwards, except in
        frames the prefix cache holds.

        The frames stay mapped under the slot (the next owner reuses them) until another
        slot needs them or ``reclaim`` is called.
        """
        pager = self._open_pager()
        self._check_slot(slot)
        pager.close_slot(slot)
        for frame in self._owed[slot]:
            self._drop_use(frame)
        self._owed[slot] = []
        self._tokens[slot] = 0
        self._taken[slot] = False
        self._free_slots.append(slot)
        self._free_slots.sort(reverse=True)

    def frame_of(self, slot: int, block: int) -> int:
        """The frame backing ``block`` of ``slot`` (a block the slot owes: it is resident)."""
        self._open_pager()
        self._check_slot(slot)
        owed = self._owed[slot]
        if not 0 <= block < len(owed):
            raise VAttentionError(f"slot {slot} owes blocks [0, {len(owed)}), not block {block}")
        return owed[block]

    def hold(self, frame: int) -> None:
        """Take the prefix cache's reference on ``frame``, a frame a live slot owes.

        The frame's content then outlives its slots and it is never handed out fresh until
        ``release``. A frame has at most one hold.
        """
        pager = self._open_pager()
        if not self.shares_frames:
            raise VAttentionError(f"the {self.backend_name} backend cannot share frames")
        self._check_frame(frame)
        if not self._uses.in_use(frame):
            raise VAttentionError(f"frame {frame} is not in use by any slot")
        pager.hold(frame)
        self._uses.add(frame)

    def release(self, frame: int) -> None:
        """Drop the hold on ``frame``: it is free once no slot maps it (a live slot that
        still owes it keeps it as a private frame)."""
        pager = self._open_pager()
        self._check_frame(frame)
        pager.release(frame)
        self._drop_use(frame)

    def commit(self) -> None:
        """Nothing to publish: ``ensure`` returns with the pages mapped, so kernels see them
        (the engine's KV cache interface; the paged baseline copies its block table here)."""

    def reclaim(self) -> int:
        """Unmap the pages that freed slots still hold; returns the blocks released."""
        return self._open_pager().reclaim()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._open_pager()
        return self._views[i]

    def stats(self) -> dict[str, Any]:
        """Accounting (``blocks_*``, ``pages_*``, ``mapped_bytes``: distinct frames owed to
        live slots or held; ``virtual_mapped_bytes``: blocks owed, counted per slot, so
        sharing shows as ``mapped_bytes < virtual_mapped_bytes``; ``frames_shared``: frames
        in use twice or more, ``shared_mapped_bytes`` their bytes) and residency
        (``resident_*``, ``cached_blocks``, ``ahead_blocks``, ``frames_held``: what is
        physically in use, including frames kept for reuse or mapped ahead)."""
        g = self.geometry
        shared = self._uses.shared
        out: dict[str, Any] = {
            "backend": self.backend_name,
            "layout": g.layout,
            "page_bytes": g.page_bytes,
            "tokens_per_block": g.tokens_per_block,
            "blocks_total": self.num_blocks,
            "blocks_used": self._used_blocks,
            "blocks_free": self.num_free_blocks,
            "pages_total": self.num_blocks * g.pages_per_block,
            "pages_mapped": self._used_blocks * g.pages_per_block,
            "pages_free": self.num_free_blocks * g.pages_per_block,
            "mapped_bytes": self._used_blocks * g.block_bytes,
            "virtual_mapped_bytes": sum(map(len, self._owed)) * g.block_bytes,
            "frames_shared": shared,
            "shared_mapped_bytes": shared * g.block_bytes,
            "token_bytes": sum(self._tokens) * g.token_bytes,
            "slots_used": sum(self._taken),
            "max_slots": self.max_slots,
        }
        if self._pager is not None:
            out.update(self._pager.residency())
        return out

    def close(self) -> None:
        """Stop the map-ahead thread and release all memory; views are invalid afterwards."""
        if self._pager is not None:
            self._views = []
            self._pager.close()
            self._pager = None

    def __enter__(self) -> KVCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_pager(self) -> Pager:
        if self._pager is None:
            raise VAttentionError("the cache is closed")
        return self._pager

    def _check_slot(self, slot: int) -> None:
        if not (0 <= slot < self.max_slots) or not self._taken[slot]:
            raise VAttentionError(f"slot {slot} is not allocated")

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_blocks:
            raise VAttentionError(f"frame {frame} is outside [0, {self.num_blocks})")

    def _check_shareable(self, shared: list[int]) -> None:
        if not self.shares_frames:
            raise VAttentionError(f"the {self.backend_name} backend cannot share frames")
        if len(shared) > self.blocks_per_slot:
            raise VAttentionError(
                f"{len(shared)} shared blocks exceed the slot's {self.blocks_per_slot}"
            )
        if len(set(shared)) != len(shared):
            raise VAttentionError(f"shared frames repeat: {shared}")
        for frame in shared:
            self._check_frame(frame)
            if not self._uses.in_use(frame):
                raise VAttentionError(f"shared frame {frame} is not in use (owed or held)")

    def _drop_use(self, frame: int) -> None:
        if self._uses.drop(frame):
            self._used_blocks -= 1
