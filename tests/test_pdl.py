"""The PDL switch: off on the CPU and under SARATHI_PDL=0, so kernels launch plainly there
(the GPU side is tests/test_fused_layers.py::test_dependent_launch_matches_plain_launch_in_a_graph)."""

from __future__ import annotations

import torch

from sarathi.model_executor import pdl


def test_cpu_tensors_launch_without_pdl() -> None:
    x = torch.zeros(1)
    assert not pdl.enabled(x)
    assert pdl.launch_args(x) == {"PDL": False}


def test_the_switch_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv("SARATHI_PDL", "0")
    assert pdl.launch_args(torch.zeros(1)) == {"PDL": False}
