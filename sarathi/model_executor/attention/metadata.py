"""What attention needs to know about one step's flat batch, and the interface every
attention backend offers.

The batch is laid out decodes first (one token each), then prefill chunks. Every token's
K/V is written to ``(slot, position)`` of the cache before attention reads it.

Inside a CUDA graph the kernels' grids are fixed when the graph is captured, so they must
not depend on the step: ``FixedLaunch`` then gives the sizes the graph was captured for,
and the kernels read the step's real counts from device tensors (rows past them exit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch

from sarathi.model_executor.attention.launch import DecodeLaunch

# Where each token's K/V row goes: the first two indices of a [A, B, Hkv, D] cache. Slot and
# position for the vattention layout, block and offset for the paged pool.
KVIndex = tuple[torch.Tensor, torch.Tensor]


class PrefillChunk(NamedTuple):
    """One prefill chunk of a step, host side: ``length`` tokens of ``slot`` from position
    ``start``. A step's chunks follow each other in the flat batch after its decodes."""

    slot: int
    start: int
    length: int


@dataclass
class ChunkTable:
    """The step's prefill chunks as device tensors: chunk c's queries are rows
    ``offset[c] .. offset[c] + length[c]`` of the flat batch, at positions
    ``start[c] ..`` of ``slot[c]``. A chunk of length 0 is padding."""

    slot: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    offset: torch.Tensor
    longest: int  # a bound on length, for the kernel grid
    # (chunk, query block) of each program of a fixed launch; chunk -1: nothing to do.
    tile_chunk: torch.Tensor | None = None
    tile_block: torch.Tensor | None = None


@dataclass(frozen=True)
class FixedLaunch:
    """Grid sizes of a captured graph, which replays with any step that fits them."""

    # The decode kernel's launch shape, and how many splits each sequence's keys take.
    decode: DecodeLaunch
    decode_splits: int
    # Decodes among the first num_decodes rows (mixed graphs; None: all of them are).
    decode_count: torch.Tensor | None = None


@dataclass
class AttentionMetadata:
    slot_of_token: torch.Tensor  # [T] slot of each token, for writing K/V
    positions: torch.Tensor  # [T]
    num_decodes: int  # the first num_decodes rows are decodes (a bound, in a mixed graph)
    decode_slots: torch.Tensor  # [num_decodes]
    decode_context_lens: torch.Tensor  # [num_decodes] tokens to attend to, current included
    max_decode_context: int
    prefills: list[PrefillChunk]  # empty in graphs
    chunks: ChunkTable | None = None  # the same chunks on the device
    launch: FixedLaunch | None = None  # set while a graph is captured or replayed
    # Backends keep per-step derived tensors here so every layer reuses them.
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeRope:
    """What a backend needs to fuse the rotary and the new K/V's cache write into a
    one-token decode step's attention (``AttentionBackend.decode_rope``): ``k`` and ``v``
    [B, Hkv, D] are the step's new key and value (and the query, passed beside them, is not
    yet rotated); with ``splits`` > 0 the three are views into the first of that many
    float32 split sums ``split_stride`` apart (a one-row q|k|v GEMV's), added up as they
    load. ``cos``/``sin``: the rotary tables; ``positions`` [B]: the rows to use; ``dtype``:
    the activations'."""

    k: torch.Tensor
    v: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    positions: torch.Tensor
    dtype: torch.dtype
    splits: int = 0
    split_stride: int = 0


class AttentionBackend(Protocol):
    name: str
    # Reads every length from device tensors, so a step can replay a CUDA graph.
    graphable: bool

    def kv_index(self, meta: AttentionMetadata) -> KVIndex:
        """Where each token's K and V are written."""
        ...

    def prefill_block_m(self, head_dim: int, dtype: torch.dtype) -> int:
        """Tokens per program of the prefill kernel for activations of ``dtype``: the unit
        of a step's tile table (``ChunkTable.tile_chunk``/``tile_block``), which backends
        without one ignore."""
        ...

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        """q: [T, Hq, D] -> [T, Hq, D]."""
        ...

    def decode_rope(
        self,
        q: torch.Tensor,
        rope: DecodeRope,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor | None:
        """``forward`` for a step of one decode with the rotary of q and k and the K/V
        cache write done inside the attention kernel (one launch fewer a layer); None where
        the backend does not fuse them, and the caller rotates, writes and calls
        ``forward``."""
        ...


def chunk_table(
    prefills: list[PrefillChunk], first_row: int, device: torch.device
) -> ChunkTable | None:
    """The device chunk table of host chunks laid out one after the other from flat row
    ``first_row`` (None for no chunks). For callers outside the model
    runner (tests, benchmarks); the runner packs it with the rest of the step's inputs."""
    if not prefills:
        return None
    rows, off = [], first_row
    for slot, start, n in prefills:
        rows.append((slot, start, n, off))
        off += n
    t = torch.tensor(rows, dtype=torch.long, device=device).t().contiguous()
    return ChunkTable(t[0], t[1], t[2], t[3], max(c.length for c in prefills))


def slot_index(meta: AttentionMetadata) -> KVIndex:
    """The vattention layout: token t's K/V row is [slot, position]."""
    return meta.slot_of_token, meta.positions


def store_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: KVIndex
) -> None:
    """Write the step's K/V [T, Hkv, D] to the cache rows ``index`` names (the reference
    path; on a GPU the fused rotary kernel writes them instead)."""
    k_cache[index] = k
    v_cache[index] = v
