"""The tensor-parallel group a worker belongs to, and its collectives.

A single-rank group never touches ``torch.distributed``: tp=1 runs exactly as before.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    world_size: int = 1
    # The torch.distributed process group; None for a single rank.
    group: Any = None

    @property
    def is_driver(self) -> bool:
        """The rank that samples and answers the engine."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return x
        dist.all_reduce(x, group=self.group)
        return x

    def broadcast_from_driver(self, x: torch.Tensor) -> None:
        """Overwrite ``x`` (contiguous, alike on every rank) with rank 0's."""
        if self.world_size > 1:
            dist.broadcast(x, src=dist.get_global_rank(self.group, 0), group=self.group)

    def gather_last_dim(self, x: torch.Tensor) -> torch.Tensor | None:
        """Concatenate every rank's ``x`` along the last dim on rank 0; None elsewhere.

        A gather rather than an all-gather: only the sampling rank needs whole rows.
        """
        if self.world_size == 1:
            return x
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)] if self.is_driver else None
        dist.gather(x, parts, dst=dist.get_global_rank(self.group, 0), group=self.group)
        return torch.cat(parts, dim=-1) if parts is not None else None


def init_tp_group(
    rank: int, world_size: int, init_method: str, device: torch.device, timeout_s: float
) -> TPGroup:
    """Join the rendezvous at ``init_method`` (e.g. ``tcp://host:port``): NCCL on a GPU,
    gloo on the host. ``timeout_s`` bounds the rendezvous and every collective, so a peer
    that vanishes turns into an error rather than a hang."""
    if world_size == 1:
        return TPGroup()
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        # Binding the device up front lets NCCL create its communicator eagerly.
        kwargs["device_id"] = device
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )
    return TPGroup(rank, world_size, dist.group.WORLD)
