"""Every environment variable sarathi reads, in one table (docs/configuration.md shows it).

Values are read where a component is built (the model's kernel switches when the model is
built, the demo cache folder when the demo is first used), never on a hot path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str
    help: str
    # The values it takes (empty: any text). A switch's typo ("yes", "true", "maybe") is
    # refused where it is read rather than taken as "off" or "on" unnoticed.
    choices: tuple[str, ...] = ()


_SWITCH = ("0", "1")


ENV_VARS: dict[str, EnvVar] = {
    v.name: v
    for v in (
        EnvVar(
            "SARATHI_CACHE",
            "~/.cache/sarathi",
            "Folder where the embedded demo model is built on first use.",
        ),
        EnvVar(
            "SARATHI_API_KEY",
            "",
            "API key the server requires when --api-key is not given (empty: none).",
        ),
        EnvVar(
            "SARATHI_ALLOW_LONG_MAX_MODEL_LEN",
            "0",
            "1: take a --max-model-len longer than the model's context (vLLM's "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN; positions past it were never trained, so only for "
            "random-weight benchmarks).",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_FUSED",
            "1",
            "0: the PyTorch reference ops instead of the fused Triton kernels (residual add + "
            "RMSNorm, rotary with the K/V write, SiLU-and-mul, the sampler's draw), to time "
            "the baseline.",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_GEMV",
            "1",
            "One-row matmuls (batch-1 decode): 1 on the split-K GEMV where it was measured "
            "faster, 0 cuBLAS for all, all the GEMV for all.",
            ("0", "1", "all"),
        ),
        EnvVar(
            "SARATHI_PDL",
            "1",
            "0: plain kernel launches instead of programmatic dependent launch (Hopper and later).",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_OVERLAP",
            "1",
            "0: a mixed step's decode attention runs after its prefill attention instead of "
            "overlapping it (launched behind it with programmatic dependent launch, or on a "
            "second stream without PDL).",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_WARP_PREFILL",
            "1",
            "0: prefill attention on Hopper runs the Triton kernel (one warp group per "
            "program) instead of the Gluon kernel with a loader warp and two consumer warp "
            "groups.",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_SYMM_ALLREDUCE",
            "1",
            "0: tensor-parallel layers all-reduce with NCCL instead of torch's "
            "symmetric-memory all-reduce (peer-to-peer over NVLink).",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_FUSED_ALLREDUCE",
            "1",
            "0: a row-parallel matmul's one-row output (batch-1 decode under tensor "
            "parallelism) is all-reduced by its own kernel before the residual add and "
            "RMSNorm, instead of inside them.",
            _SWITCH,
        ),
        EnvVar(
            "SARATHI_RANK_PROFILE",
            "",
            "A folder: each tensor-parallel rank profiles ten steps after twenty warm ones "
            "with the torch profiler and writes there (rank<N>.txt) how long its device "
            "sat idle between kernels, the longest gaps first, and its per-op table.",
        ),
    )
}


def env(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value, or its default when unset; ``name`` must be in the table. A
    value outside the variable's choices is a ValueError naming them."""
    var = ENV_VARS[name]
    value = (os.environ if environ is None else environ).get(name, var.default)
    if var.choices and value not in var.choices:
        raise ValueError(f"{name} must be {' or '.join(var.choices)}, got {value!r}")
    return value


def check_all(environ: Mapping[str, str] | None = None) -> None:
    """Read every variable once (a ValueError for a value outside its choices): at engine
    start, so a typo is refused on every machine, also where the variable would not be read
    (the kernel switches on a CPU)."""
    for name in ENV_VARS:
        env(name, environ)
