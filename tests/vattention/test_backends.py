"""Choosing a backend: ``auto`` on a GPU without the extension falls back, saying why."""

from __future__ import annotations

import logging

import pytest
import torch

from vattention import backends


def test_auto_falls_back_with_a_logged_reason_when_the_extension_is_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backends, "cuda_extension_error", lambda: "the extension is not built")
    with caplog.at_level(logging.WARNING, logger="vattention"):
        assert backends.resolve_backend("auto", torch.device("cuda")) == "dense"
    assert "the extension is not built" in caplog.text and "dense" in caplog.text


def test_asking_for_cuda_without_the_extension_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backends, "cuda_extension_error", lambda: "the extension is not built")
    with pytest.raises(ValueError, match="the extension is not built"):
        backends.resolve_backend("cuda", torch.device("cuda"))
