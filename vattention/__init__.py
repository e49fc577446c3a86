"""vAttention: a KV cache whose per-request storage is virtually contiguous.

Physical memory is mapped under a large virtual reservation on demand, so attention
kernels see plain strided tensors ``[max_slots, max_len, kv_heads, head_dim]`` per layer.
This package does not import ``sarathi``: it is a library the engine uses.
"""

from vattention.backends import available_backends
from vattention.errors import DriverError, OutOfPagesError, VAttentionError
from vattention.geometry import PageGeometry, plan_geometry
from vattention.kvcache import KVCache

__all__ = [
    "DriverError",
    "KVCache",
    "OutOfPagesError",
    "PageGeometry",
    "VAttentionError",
    "available_backends",
    "plan_geometry",
]
