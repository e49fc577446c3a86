"""Sizing and creating the KV cache from the configuration.

The sizing rule (documented in docs/adaptivocab.md):

- ``r`` is the tokenizer's measured reduction ratio (patched / base tokens on held-out
  domain text; 1 without a patch tokenizer). A typical request of ``expected_request_tokens``
  base tokens costs ``ceil(expected_request_tokens * r)`` cache tokens.
- The physical page pool is the memory budget (``--kv-cache-memory``, else what the GPU has
  left under ``--gpu-memory-utilization``, else 4 GiB on the host), capped at what
  ``max_num_seqs`` requests of ``max_model_len`` tokens could ever use.
- The number of slots (virtual per-request reservations) is how many typical requests the
  pool holds, capped by ``max_num_seqs``: with ``r = 0.75`` the same budget admits 1/0.75
  = 1.33 times as many typical requests.
- Each slot spans ``max_model_len`` tokens of virtual space (reservations cost no memory),
  which is ``max_model_len / r`` base-tokenizer tokens of text.

The ``dense`` backend allocates every slot's ``max_len`` tokens up front, so its slots are
as many as the pool holds at that length (capped by ``max_num_seqs``).

The ``paged`` baseline spends the same budget on a pool of ``--block-tokens``-token blocks
allocated up front and has ``max_num_seqs`` slots (block-table rows cost next to nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import vattention
from sarathi.config import CacheConfig
from sarathi.core.scheduler import CacheCapacity
from sarathi.model_executor.attention import AttentionBackend, get_attention_backend
from sarathi.model_executor.kernel_switches import KernelSwitches
from sarathi.model_executor.model_shape import ModelShape
from sarathi.worker.kv_cache import KVCache
from sarathi.worker.paged_cache import PagedKVCache, paged_block_bytes
from vattention.backends import default_page_bytes, resolve_backend

HOST_DEFAULT_BUDGET = 4 * 1024**3


def budget_flag(config: CacheConfig, device: torch.device) -> str:
    """The flag that set the KV cache budget, for errors that ask for a larger one: the
    budget on a GPU comes from --gpu-memory-utilization unless --kv-cache-memory is given."""
    if config.kv_cache_memory is None and device.type == "cuda":
        return "--gpu-memory-utilization (or set --kv-cache-memory)"
    return "--kv-cache-memory"


def unread_fraction(config: CacheConfig, device: torch.device) -> str | None:
    """Why a --gpu-memory-utilization the user gave is not read (None: it is, or none was
    given): only a GPU's worker reads it, and only to size a cache whose size is not given."""
    if config.gpu_memory_utilization is None:
        return None
    if device.type != "cuda":
        return (
            f"on {device}: the KV cache there takes --kv-cache-memory (default: 4 GiB, or "
            "less where --max-num-seqs requests of --max-model-len tokens need less)"
        )
    if config.kv_cache_memory is not None:
        return "with --kv-cache-memory, which sets the KV cache's size"
    return None


def gpu_kv_room(config: CacheConfig, free_now: int, total: int, step_bytes: int) -> int:
    """The bytes the KV cache may take on a GPU whose weights are loaded (``free_now`` and
    ``total`` as ``torch.cuda.mem_get_info`` gives them), leaving ``step_bytes`` for one
    step's activations. Unset --kv-cache-memory: what --gpu-memory-utilization of the GPU
    leaves, a ValueError naming it where that is nothing. Set: all that is free; the
    fraction is not read (as vLLM's kv_cache_memory_bytes), and plan_cache checks that the
    cache fits."""
    if config.kv_cache_memory is not None:
        return free_now - step_bytes
    fraction = config.resolved_gpu_memory_utilization
    room = int(total * fraction) - (total - free_now) - step_bytes
    if room <= 0:
        raise ValueError(
            f"no GPU memory is left for the KV cache under gpu_memory_utilization {fraction}: "
            f"{(total - free_now) / 1024**3:.2f} GiB of the GPU's {total / 1024**3:.2f} GiB "
            f"are in use (the weights, other processes) and {step_bytes / 1024**3:.2f} GiB "
            "are kept for a step's activations; raise --gpu-memory-utilization, set "
            "--kv-cache-memory, or use a smaller model"
        )
    return room


@dataclass(frozen=True)
class CachePlan:
    backend: str
    layout: str
    page_bytes: int | None  # vattention's physical page size (None: the paged baseline)
    block_tokens: int | None  # tokens per block of the paged baseline (None: vattention)
    max_slots: int
    max_len: int
    budget: int  # physical bytes
    reduction_ratio: float
    expected_tokens: int  # cache tokens of a typical request (base tokens * ratio)

    @property
    def text_capacity_base_tokens(self) -> int:
        """Longest request in base-tokenizer tokens a slot can hold."""
        return int(self.max_len / self.reduction_ratio)


def plan_cache(
    config: CacheConfig,
    shape: ModelShape,
    dtype: torch.dtype,
    device: torch.device,
    max_num_seqs: int,
    max_len: int,
    reduction_ratio: float = 1.0,
    free_device_bytes: int | None = None,
    paged: bool = False,
) -> CachePlan:
    """``free_device_bytes``: on a GPU, what ``gpu_kv_room`` gives."""
    if not 0 < reduction_ratio <= 4:
        raise ValueError(
            f"implausible token reduction ratio {reduction_ratio} (patched / base tokens, from "
            "the patch tokenizer's reduction_stats.json; the KV cache is sized from it): "
            "remeasure with `python -m adaptivocab stats --write`"
        )
    given = config.kv_cache_memory
    budget = given
    if budget is None:
        budget = free_device_bytes if device.type == "cuda" else HOST_DEFAULT_BUDGET
    assert budget is not None, "a CUDA device needs free_device_bytes"
    flag = budget_flag(config, device)
    typical = config.resolved_expected_request_tokens
    expected = max(1, math.ceil(min(typical, max_len) * reduction_ratio))
    if paged:
        plan = _plan_paged(
            config, shape, dtype, budget, max_num_seqs, max_len, reduction_ratio, expected, flag
        )
    else:
        plan = _plan_vattention(
            config,
            shape,
            dtype,
            device,
            budget,
            max_num_seqs,
            max_len,
            reduction_ratio,
            expected,
            flag,
        )
    if given is not None and free_device_bytes is not None and plan.budget > free_device_bytes:
        # The cuda and dense backends allocate their whole pool at start-up: a budget the
        # GPU does not have would fail there with the driver's out-of-memory error.
        raise ValueError(
            f"kv_cache_memory {given} bytes gives a KV cache of {plan.budget} bytes, more "
            f"than the GPU has free ({max(0, free_device_bytes)} bytes after the weights and "
            "a step's activations); lower --kv-cache-memory"
        )
    return plan


def _plan_vattention(
    config: CacheConfig,
    shape: ModelShape,
    dtype: torch.dtype,
    device: torch.device,
    budget: int,
    max_num_seqs: int,
    max_len: int,
    reduction_ratio: float,
    expected: int,
    flag: str,
) -> CachePlan:
    """The plan of a mapped (cuda, cpu) or dense vAttention cache."""
    # resolve_backend also refuses a backend the device cannot use (e.g. cuda on the CPU).
    backend = resolve_backend(config.kv_cache_backend, device)
    layout = config.resolved_kv_layout
    row = shape.num_kv_heads * shape.head_dim * torch.tensor([], dtype=dtype).element_size()
    page_bytes = config.page_bytes or default_page_bytes(
        backend, device, row * (shape.num_layers if layout == "mega" else 1)
    )
    geometry = vattention.plan_geometry(
        shape.num_layers, shape.num_kv_heads, shape.head_dim, dtype, layout, page_bytes
    )
    block_bytes = geometry.block_bytes
    expected_blocks = geometry.blocks_for(expected)
    pool_blocks = budget // block_bytes
    if pool_blocks < 1:
        raise ValueError(
            f"the KV cache budget ({budget} bytes) is smaller than one allocation "
            f"block ({block_bytes} bytes); raise {flag}"
        )
    per_slot = geometry.blocks_for(max_len)
    pool_blocks = min(pool_blocks, max_num_seqs * per_slot)
    if backend == "dense":
        # The dense backend allocates every slot's whole extent up front (vattention/dense.py),
        # so the budget buys slots of max_len tokens: sized by the typical request, it would
        # be exceeded up to max_len / expected_request_tokens times (on a GPU whose cuda
        # backend fell back to dense, an out-of-memory at start-up).
        slots = min(max_num_seqs, pool_blocks // per_slot)
        if slots < 1:
            raise ValueError(
                f"the dense KV cache allocates a slot's {max_len} tokens up front "
                f"({per_slot * block_bytes} bytes), more than its budget ({budget} bytes); "
                f"raise {flag} or lower --max-model-len"
            )
        pool_blocks = slots * per_slot
    else:
        slots = max(1, min(max_num_seqs, pool_blocks // expected_blocks))
    return CachePlan(
        backend,
        layout,
        page_bytes,
        None,
        slots,
        max_len,
        pool_blocks * block_bytes,
        reduction_ratio,
        expected,
    )


def _plan_paged(
    config: CacheConfig,
    shape: ModelShape,
    dtype: torch.dtype,
    budget: int,
    max_num_seqs: int,
    max_len: int,
    reduction_ratio: float,
    expected: int,
    flag: str,
) -> CachePlan:
    """The paged baseline's plan."""
    block_tokens = config.resolved_block_tokens
    if block_tokens <= 0:
        raise ValueError(f"--block-tokens must be positive, got {block_tokens}")
    block_bytes = paged_block_bytes(
        shape.num_layers, shape.num_kv_heads, shape.head_dim, dtype, block_tokens
    )
    blocks = min(budget // block_bytes, max_num_seqs * math.ceil(max_len / block_tokens))
    if blocks < 1:
        raise ValueError(
            f"the KV cache budget ({budget} bytes) is smaller than one block "
            f"({block_bytes} bytes); raise {flag}"
        )
    return CachePlan(
        "paged",
        "paged",
        None,
        block_tokens,
        max_num_seqs,
        max_len,
        blocks * block_bytes,
        reduction_ratio,
        expected,
    )


def create_cache(
    plan: CachePlan,
    shape: ModelShape,
    dtype: torch.dtype,
    device: torch.device,
    attention_backend: str,
    kernels: KernelSwitches,
) -> tuple[KVCache, AttentionBackend]:
    """The cache ``plan`` describes, and the resolved attention backend
    ``attention_backend`` wired to it (the paged kernels read its block table)."""
    if plan.block_tokens is not None:
        block_bytes = paged_block_bytes(
            shape.num_layers, shape.num_kv_heads, shape.head_dim, dtype, plan.block_tokens
        )
        paged = PagedKVCache(
            shape.num_layers,
            shape.num_kv_heads,
            shape.head_dim,
            plan.max_slots,
            plan.max_len,
            dtype,
            device,
            plan.block_tokens,
            plan.budget // block_bytes,
        )
        attention = get_attention_backend(
            attention_backend, device, paged.block_tables, paged.block_tokens, kernels
        )
        return paged, attention
    cache = vattention.KVCache(
        num_layers=shape.num_layers,
        num_kv_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_slots=plan.max_slots,
        max_len=plan.max_len,
        dtype=dtype,
        device=device,
        layout=plan.layout,
        page_bytes=plan.page_bytes,
        memory_budget=plan.budget,
        backend=plan.backend,
    )
    return cache, get_attention_backend(attention_backend, device, kernels=kernels)


def capacity_of(cache: KVCache) -> CacheCapacity:
    return CacheCapacity(
        num_blocks=cache.num_blocks,
        tokens_per_block=cache.tokens_per_block,
        max_slots=cache.max_slots,
    )
