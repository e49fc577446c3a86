"""``KVCache``: the front of the cache that every backend shares.

The front owns the bookkeeping (which slots are taken, how many allocation units each slot
holds, how many are free under the budget); a backend owns the memory and maps it. Keeping
the accounting in one place means the dense reference, the CPU backend and the CUDA backend
cannot disagree about what "out of pages" means.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from vattention.errors import OutOfPagesError, VAttentionError
from vattention.geometry import PageGeometry, plan_geometry

BACKENDS = ("auto", "dense")
_OS_PAGE = 4096


class Backend(Protocol):
    """Memory behind a cache; see ``vattention.dense`` for the simplest one."""

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def map(self, slot: int, first_unit: int, num_units: int) -> None: ...
    def release(self, slot: int, num_units: int) -> None: ...
    def close(self) -> None: ...


def available_backends() -> list[str]:
    """Backends that can be created on this machine (``auto`` resolves to the first)."""
    return ["dense"]


def _default_page_size(backend: str, row_bytes: int) -> int:
    # Small pages on the host: the OS page is the granularity there, and small units keep
    # the scheduler's accounting fine-grained for small test models.
    return math.lcm(_OS_PAGE, row_bytes)


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
        page_size: int | None = None,
        memory_budget: int | None = None,
        backend: str = "auto",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if max_slots <= 0 or max_len <= 0:
            raise ValueError(f"max_slots and max_len must be positive, got {max_slots}, {max_len}")
        self.backend_name = available_backends()[0] if backend == "auto" else backend
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_slots = max_slots
        if page_size is None:
            elem = torch.tensor([], dtype=dtype).element_size()
            row = num_kv_heads * head_dim * elem * (num_layers if layout == "mega" else 1)
            page_size = _default_page_size(self.backend_name, row)
        self.geometry: PageGeometry = plan_geometry(
            num_layers, num_kv_heads, head_dim, dtype, layout, page_size)
        self.max_len = max_len
        self.units_per_slot = self.geometry.units_for(max_len)
        full = max_slots * self.units_per_slot
        if memory_budget is None:
            self.num_units = full
        else:
            self.num_units = min(full, memory_budget // self.geometry.unit_bytes)
            if self.num_units <= 0:
                raise ValueError(
                    f"memory_budget {memory_budget} bytes is smaller than one allocation unit "
                    f"({self.geometry.unit_bytes} bytes)")
        self._units = [0] * max_slots  # units mapped per slot
        self._tokens = [0] * max_slots  # tokens covered per slot (for token_bytes)
        self._taken = [False] * max_slots
        self._free_slots = list(range(max_slots - 1, -1, -1))  # pop() gives the lowest
        self._used_units = 0
        self._backend: Backend | None = self._create_backend()
        # Backends size slots to whole pages; callers see exactly max_len tokens.
        self._views = [(k[:, :max_len], v[:, :max_len])
                       for k, v in (self._backend.layer(i) for i in range(num_layers))]

    def _create_backend(self) -> Backend:
        from vattention.dense import DenseBackend

        return DenseBackend(
            self.num_layers, self.num_kv_heads, self.head_dim, self.max_slots,
            self.geometry.padded_len(self.max_len), self.dtype, self.device, self.geometry.layout)

    # -- geometry --------------------------------------------------------------------------
    @property
    def tokens_per_page(self) -> int:
        return self.geometry.tokens_per_page

    @property
    def layout(self) -> str:
        return self.geometry.layout

    @property
    def num_free_units(self) -> int:
        return self.num_units - self._used_units

    # -- slots -----------------------------------------------------------------------------
    def alloc_slot(self) -> int:
        """Take the lowest free slot; raises VAttentionError when all are taken."""
        if not self._free_slots:
            raise VAttentionError(f"all {self.max_slots} slots are taken")
        slot = self._free_slots.pop()
        self._taken[slot] = True
        return slot

    def ensure(self, slot: int, num_tokens: int) -> None:
        """Make sure pages back tokens ``[0, num_tokens)`` of ``slot``."""
        self._check_slot(slot)
        if num_tokens > self.max_len:
            raise VAttentionError(f"{num_tokens} tokens exceed max_len {self.max_len}")
        need = self.geometry.units_for(num_tokens)
        have = self._units[slot]
        if need > have:
            grow = need - have
            if grow > self.num_free_units:
                raise OutOfPagesError(
                    f"slot {slot} needs {grow} more allocation units for {num_tokens} tokens, "
                    f"only {self.num_free_units} of {self.num_units} are free")
            self._backend.map(slot, have, grow)
            self._units[slot] = need
            self._used_units += grow
        self._tokens[slot] = max(self._tokens[slot], num_tokens)

    def free_slot(self, slot: int) -> None:
        """Return a slot and its pages; its contents are undefined afterwards."""
        self._check_slot(slot)
        self._backend.release(slot, self._units[slot])
        self._used_units -= self._units[slot]
        self._units[slot] = 0
        self._tokens[slot] = 0
        self._taken[slot] = False
        self._free_slots.append(slot)
        self._free_slots.sort(reverse=True)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._backend is None:
            raise VAttentionError("the cache is closed")
        return self._views[i]

    def stats(self) -> dict[str, Any]:
        g = self.geometry
        return {
            "backend": self.backend_name,
            "layout": g.layout,
            "page_size": g.page_size,
            "tokens_per_page": g.tokens_per_page,
            "units_total": self.num_units,
            "units_mapped": self._used_units,
            "units_free": self.num_free_units,
            "pages_total": self.num_units * g.pages_per_unit,
            "pages_mapped": self._used_units * g.pages_per_unit,
            "pages_free": self.num_free_units * g.pages_per_unit,
            "mapped_bytes": self._used_units * g.unit_bytes,
            "token_bytes": sum(self._tokens) * g.token_bytes,
            "slots_used": sum(self._taken),
            "max_slots": self.max_slots,
        }

    def close(self) -> None:
        if self._backend is not None:
            self._views = []
            self._backend.close()
            self._backend = None

    def __enter__(self) -> "KVCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_slot(self, slot: int) -> None:
        if not (0 <= slot < self.max_slots) or not self._taken[slot]:
            raise VAttentionError(f"slot {slot} is not allocated")
