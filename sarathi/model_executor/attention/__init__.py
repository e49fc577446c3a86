"""Attention backends over the vattention slot layout."""

from __future__ import annotations

from sarathi.model_executor.attention.metadata import AttentionMetadata
from sarathi.model_executor.attention.torch_backend import TorchAttention

BACKENDS = {"torch": TorchAttention}


def get_attention_backend(name: str) -> TorchAttention:
    """Resolve ``auto`` to the fastest backend available here."""
    if name == "auto":
        name = "torch"
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is not available; available: "
                         f"{', '.join(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["AttentionMetadata", "get_attention_backend"]
