"""The tensor-parallel group a worker belongs to, and its collectives.

A single-rank group never touches ``torch.distributed``: tp=1 runs exactly as before.

On GPUs the layers' all-reduces go through torch's symmetric memory where it is available
(``SymmetricAllReduce``): each rank writes its part into a buffer every peer can read over
NVLink and one kernel adds them up. Replayed from CUDA graphs on two H200s it took 6.3 us
for one 4,096-wide bf16 row where NCCL took 11.6, and 14.9 vs 37.8 us for 256 rows
(``benchmarks/allreduce.py``). NCCL remains for everything else and where the buffer
does not fit. At batch 1 the row-parallel layers' all-reduce is fused into the norm after
them (``layers/all_reduce_norm.py``). The engine's disable_custom_all_reduce (vLLM's flag)
turns both off: every all-reduce is then NCCL's.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist

from sarathi.envs import env
from sarathi.model_executor.layers.all_reduce_norm import PeerParts

logger = logging.getLogger(__name__)

# Up to this size a one-shot all-reduce (every rank reads all peers' parts) beats the
# two-shot one (reduce-scatter, then all-gather); measured at 8 KiB and 2 MiB.
_ONE_SHOT_MAX_BYTES = 128 * 1024


class SymmetricAllReduce:
    """All-reduce through symmetric memory (peer-to-peer over NVLink; no multicast): torch's
    kernels on a buffer of up to ``max_elems`` in the activations' ``dtype``, and, unless
    ``SARATHI_FUSED_ALLREDUCE=0``, a float32 buffer of two slots of ``parts_elems`` for the
    one-row matmuls' split sums, which ``all_reduce_add_rms_norm`` sums over the ranks
    (``peer_slots``). Building one is collective."""

    def __init__(
        self, group: Any, max_elems: int, dtype: torch.dtype, parts_elems: int, device: torch.device
    ) -> None:
        import torch.distributed._symmetric_memory as symm_mem

        self.name = group.group_name
        self.world_size = dist.get_world_size(group)
        self.buf = symm_mem.empty(max_elems, dtype=dtype, device=device)
        symm_mem.rendezvous(self.buf, self.name)
        self.ops = torch.ops.symm_mem
        self.peer_slots: tuple[PeerParts, ...] = ()
        if env("SARATHI_FUSED_ALLREDUCE") != "0":
            parts = symm_mem.empty(2, parts_elems, dtype=torch.float32, device=device)
            handle = symm_mem.rendezvous(parts, self.name)
            # The handle addresses each rank's allocation; the tensor may start inside it.
            offset = parts.data_ptr() - handle.buffer_ptrs[handle.rank]
            pads = torch.tensor(list(handle.signal_pad_ptrs), device=device)
            self.peer_slots = tuple(
                PeerParts(
                    parts[slot],
                    torch.tensor(
                        [
                            p + offset + slot * parts.stride(0) * parts.element_size()
                            for p in handle.buffer_ptrs
                        ],
                        device=device,
                    ),
                    pads,
                    handle.rank,
                    handle.world_size,
                )
                for slot in (0, 1)
            )

    def fits(self, x: torch.Tensor) -> bool:
        n = x.numel()
        return (
            x.dtype == self.buf.dtype
            and n <= self.buf.numel()
            and n % (8 * self.world_size) == 0
            and x.is_contiguous()
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``x`` (which ``fits``): a new tensor, or ``x`` itself."""
        n = x.numel()
        part = self.buf[:n]
        if n * x.element_size() <= _ONE_SHOT_MAX_BYTES:
            out = self.ops.one_shot_all_reduce_copy(part, x.view(-1), "sum", self.name)
            return out.view_as(x)
        part.copy_(x.view(-1))
        self.ops.two_shot_all_reduce_(part, "sum", self.name)
        return x.copy_(part.view_as(x))


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    world_size: int = 1
    # The torch.distributed process group; None for a single rank.
    group: Any = None
    # The layers' all-reduce on GPUs where symmetric memory is available.
    symmetric: SymmetricAllReduce | None = None

    @property
    def is_driver(self) -> bool:
        """The rank that samples and answers the engine."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over the ranks: ``x`` summed in place, or a new tensor."""
        if self.world_size == 1:
            return x
        if self.symmetric is not None and self.symmetric.fits(x):
            return self.symmetric(x)
        dist.all_reduce(x, group=self.group)
        return x

    def with_symmetric_all_reduce(
        self,
        max_elems: int,
        dtype: torch.dtype,
        parts_elems: int,
        device: torch.device,
        disabled: bool = False,
    ) -> TPGroup:
        """This group with its all-reduces of up to ``max_elems`` activations, and of up
        to ``parts_elems`` float32 split sums (``SymmetricAllReduce``), on symmetric memory
        where the GPUs and this torch allow it (``disabled``, the engine's
        disable_custom_all_reduce, or ``SARATHI_SYMM_ALLREDUCE=0``: never, and every
        all-reduce is NCCL's). Collective: every rank calls it with the same arguments."""
        if (
            disabled
            or self.world_size == 1
            or device.type != "cuda"
            or env("SARATHI_SYMM_ALLREDUCE") == "0"
        ):
            return self
        try:
            symmetric = SymmetricAllReduce(self.group, max_elems, dtype, parts_elems, device)
        except (ImportError, AttributeError, RuntimeError) as e:
            logger.warning("symmetric-memory all-reduce unavailable (%s); NCCL is used", e)
            return self
        return replace(self, symmetric=symmetric)

    def peers(self, slot: int) -> PeerParts | None:
        """Slot ``slot`` (0 or 1) of the buffer row-parallel matmuls write their one-row
        split sums to, for the next fused norm to sum over the ranks; consecutive
        row-parallel layers take alternate slots. None where the all-reduce is not fused."""
        if self.symmetric is None or not self.symmetric.peer_slots:
            return None
        return self.symmetric.peer_slots[slot]

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
