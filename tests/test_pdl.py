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
    assert {"SARATHI_FUSED", "SARATHI_GEMV", "SARATHI_PDL", "SARATHI_OVERLAP",
            "SARATHI_WARP_PREFILL"} <= set(ENV_VARS)
    with pytest.raises(KeyError):
        env("SARATHI_NOT_A_VARIABLE")


@pytest.mark.parametrize(
    "name,value",
    [("SARATHI_FUSED", "maybe"), ("SARATHI_PDL", "true"), ("SARATHI_GEMV", "2"),
     ("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", "yes")],
)  # fmt: skip
def test_a_switch_outside_its_values_is_refused_where_it_is_read(name, value) -> None:
    # "yes" read as off (and "maybe" as on) went unnoticed.
    with pytest.raises(ValueError, match=f"{name} must be 0 or 1.*got '{value}'"):
        env(name, {name: value})
    assert env("SARATHI_CACHE", {"SARATHI_CACHE": "anything"}) == "anything"


def test_the_engine_checks_every_variable_at_start(monkeypatch) -> None:
    # On a CPU the kernel switches are never read: the typo is refused there too.
    from sarathi import LLM

    monkeypatch.setenv("SARATHI_PDL", "on")
    with pytest.raises(ValueError, match="SARATHI_PDL must be 0 or 1, got 'on'"):
        LLM()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_switches_off_by_environment() -> None:
    cuda = torch.device("cuda")
    assert not KernelSwitches.resolve(cuda, {"SARATHI_PDL": "0"}).pdl
    assert KernelSwitches.resolve(cuda, {"SARATHI_FUSED": "0"}) == REFERENCE
    assert KernelSwitches.resolve(cuda, {"SARATHI_GEMV": "0"}).gemv == "0"
    assert KernelSwitches.resolve(cuda, {}).overlap
    assert not KernelSwitches.resolve(cuda, {"SARATHI_OVERLAP": "0"}).overlap
    assert not KernelSwitches.resolve(cuda, {"SARATHI_WARP_PREFILL": "0"}).warp_prefill
    hopper = torch.cuda.get_device_capability(cuda)[0] == 9
    assert KernelSwitches.resolve(cuda, {}).warp_prefill == hopper
