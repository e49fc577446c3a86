"""A step's inputs on the device: built on the host as arrays, moved in one copy.

Every integer the model, attention and sampler need for a step (token ids, positions,
slots, the decode and chunk tables, the rows to sample) lives in one device buffer at fixed
offsets. Each step fills a pinned host twin and copies it over in one transfer. CUDA
graphs are captured over views of this buffer, so a replay needs no copy of its own.
Rows past a step's real count are filled with padding that is harmless to compute on (a
pad slot's position 0; tiles and chunks that do nothing).

A step larger than the fixed capacity (the ``vllm`` policy's whole prefills, many chunks)
gets a buffer of its own size; it runs eagerly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# field -> the capacity it is sized by
FIELDS: dict[str, str] = {
    "ids": "tokens",
    "positions": "tokens",
    "slot_of_token": "tokens",
    "decode_slots": "decodes",
    "decode_lens": "decodes",
    "chunk_slot": "chunks",
    "chunk_start": "chunks",
    "chunk_len": "chunks",
    "chunk_off": "chunks",
    "tile_chunk": "tiles",
    "tile_block": "tiles",
    "sample_idx": "samples",
    "sample_slots": "samples",
    "decode_count": "one",
}


@dataclass(frozen=True)
class Capacity:
    tokens: int
    decodes: int
    chunks: int
    tiles: int
    samples: int

    def fits(self, other: Capacity) -> bool:
        return (
            other.tokens <= self.tokens
            and other.decodes <= self.decodes
            and other.chunks <= self.chunks
            and other.tiles <= self.tiles
            and other.samples <= self.samples
        )

    def size(self, group: str) -> int:
        return 1 if group == "one" else int(getattr(self, group))


class StepBuffers:
    """The fixed-layout device buffer and its pinned host twins (two, used in turn, so a
    step can be filled while the previous step's copy may still be in flight)."""

    def __init__(self, capacity: Capacity, device: torch.device, pad_slot: int = 0) -> None:
        self.capacity = capacity
        self.device = device
        self.pad = {
            "slot_of_token": pad_slot,
            "decode_slots": pad_slot,
            "decode_lens": 1,
            "sample_slots": pad_slot,
            "tile_chunk": -1,
        }
        self.offsets: dict[str, int] = {}
        total = 0
        for name, group in FIELDS.items():
            self.offsets[name] = total
            total += capacity.size(group)
        self.total = total
        self.device_buffer = torch.zeros(total, dtype=torch.long, device=device)
        pinned = device.type == "cuda"
        self._hosts = [torch.zeros(total, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._copied: list[torch.cuda.Event | None] = [None, None]
        self._turn = 0

    def view(self, name: str, length: int) -> torch.Tensor:
        """The first ``length`` rows of a field in the device buffer."""
        off = self.offsets[name]
        return self.device_buffer[off : off + length]

    def load(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Copy a step's arrays (every field, at most its capacity long) to the device;
        returns each field's rows there (exactly the array's length)."""
        turn = self._turn
        self._turn ^= 1
        event = self._copied[turn]
        if event is not None:
            event.synchronize()  # this host twin's last copy (two steps ago) is done
        host = self._hosts[turn].numpy()
        for name, group in FIELDS.items():
            off = self.offsets[name]
            a = arrays[name]
            n = len(a)
            host[off : off + n] = a
            host[off + n : off + self.capacity.size(group)] = self.pad.get(name, 0)
        self.device_buffer.copy_(self._hosts[turn], non_blocking=True)
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self._copied[turn] = event
        return {name: self.view(name, len(a)) for name, a in arrays.items()}


def load_once(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A step too large for the fixed buffer: its arrays packed back to back, one copy."""
    lengths = [len(a) for a in arrays.values()]
    packed = torch.from_numpy(np.concatenate([a.astype(np.int64) for a in arrays.values()]))
    if device.type == "cuda":
        packed = packed.pin_memory().to(device, non_blocking=True)
    out: dict[str, torch.Tensor] = {}
    off = 0
    for name, n in zip(arrays, lengths, strict=True):
        out[name] = packed[off : off + n]
        off += n
    return out
