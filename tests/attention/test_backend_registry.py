"""Backend selection works on any machine."""

from __future__ import annotations

import pytest
import torch

from sarathi.model_executor.attention import get_attention_backend, resolve_attention_backend


def test_auto_is_torch_on_cpu() -> None:
    assert resolve_attention_backend("auto", torch.device("cpu")) == "torch"
    assert get_attention_backend("auto", torch.device("cpu")).name == "torch"


def test_triton_refuses_cpu() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        resolve_attention_backend("triton", torch.device("cpu"))


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="available"):
        resolve_attention_backend("nope", torch.device("cpu"))
