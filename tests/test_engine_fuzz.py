"""A fixed set of the engine fuzzer's cases (tests/engine_fuzz.py): random engine
configurations, arrival orders, aborts and cache resets must give every request what the
reference configuration gives it, and leave the engine idle. A failure names its case:
rerun it with ``python tests/engine_fuzz.py --case N -v``."""

from __future__ import annotations

import dataclasses
import json

import pytest
from engine_fuzz import FuzzModel, fuzz_models, run_case


@pytest.fixture(scope="module")
def models(tiny_models: dict[str, str], tmp_path_factory) -> dict[str, FuzzModel]:
    return fuzz_models(tiny_models, str(tmp_path_factory.mktemp("fuzz")))


@pytest.mark.slow
@pytest.mark.parametrize("case", range(24))
def test_configurations_match_the_reference(case: int, models: dict[str, FuzzModel]) -> None:
    findings = run_case(case, models, configs=4, processes=False)
    assert not findings, "\n".join(
        json.dumps(dataclasses.asdict(f), default=str)[:3000] for f in findings[:5]
    )


@pytest.mark.gpu
@pytest.mark.parametrize("case", range(6))
def test_gpu_configurations_match_the_reference(
    case: int, models: dict[str, FuzzModel]
) -> None:
    findings = run_case(case, models, configs=3, processes=False, device="cuda")
    assert not findings, "\n".join(
        json.dumps(dataclasses.asdict(f), default=str)[:3000] for f in findings[:5]
    )
