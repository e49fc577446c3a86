"""The engine's device as resolved from --device: a GPU always carries its index, since the
threads that run steps make it current by index (torch refuses an index-less device there)."""

import pytest
import torch

from sarathi.engine import model_setup
from sarathi.engine.model_setup import bind_thread_device, resolve_device


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, current: int = 0) -> list[int]:
    chosen: list[int] = []
    monkeypatch.setattr(model_setup.torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(model_setup.torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(model_setup.torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(model_setup.torch.cuda, "set_device", chosen.append)
    return chosen


def test_cpu_and_auto_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_a_gpu_named_without_an_index_gets_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 2, current=1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_a_gpu_index_past_the_machine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match="1 CUDA GPU"):
        resolve_device("cuda:3")


def test_binding_makes_the_index_current_and_leaves_the_cpu_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = _fake_gpus(monkeypatch, 2)
    bind_thread_device(torch.device("cpu"))
    bind_thread_device(torch.device("cuda", 1))
    bind_thread_device(torch.device("cuda"))
    assert chosen == [1, 0]
