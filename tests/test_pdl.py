"""The kernel switches: resolved once from SARATHI_* (sarathi/envs.py) when a model is built;
the reference ops on the CPU, and PDL off under SARATHI_PDL=0 (the GPU side is
tests/test_fused_layers.py::test_dependent_launch_matches_plain_launch_in_a_graph)."""

from __future__ import annotations

import pytest
import torch

from sarathi.envs import ENV_VARS, env
from sarathi.model_executor import pdl
from sarathi.model_executor.kernel_switches import REFERENCE, KernelSwitches


def test_the_cpu_gets_the_reference_ops() -> None:
    assert KernelSwitches.resolve(torch.device("cpu")) == REFERENCE
    assert not pdl.supported(torch.device("cpu"))
    assert pdl.launch_args(False) == {"PDL": False}


def test_the_switches_are_read_from_the_table() -> None:
    assert env("SARATHI_PDL", {}) == "1" and env("SARATHI_PDL", {"SARATHI_PDL": "0"}) == "0"
    assert {"SARATHI_FUSED", "SARATHI_GEMV", "SARATHI_PDL", "SARATHI_OVERLAP"} <= set(ENV_VARS)
    with pytest.raises(KeyError):
        env("SARATHI_NOT_A_VARIABLE")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_switches_off_by_environment() -> None:
    cuda = torch.device("cuda")
    assert not KernelSwitches.resolve(cuda, {"SARATHI_PDL": "0"}).pdl
    assert KernelSwitches.resolve(cuda, {"SARATHI_FUSED": "0"}) == REFERENCE
    assert KernelSwitches.resolve(cuda, {"SARATHI_GEMV": "0"}).gemv == "0"
    assert KernelSwitches.resolve(cuda, {}).overlap
    assert not KernelSwitches.resolve(cuda, {"SARATHI_OVERLAP": "0"}).overlap
