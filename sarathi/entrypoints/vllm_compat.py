"""vLLM options that change nothing here, taken so vLLM code and command lines run
unchanged: the ``serve`` flags and ``LLM(...)`` keywords of the same names. Each takes only
the values that mean what this engine does anyway; others are refused, saying why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NoOpOption:
    name: str  # the keyword; the flag is --name-with-dashes
    why: str  # what this engine does instead
    # What it takes: "bool" (either), "true" (on: a flag), "number" (>= 0), "only" (one of
    # the values ``only``) or "unset" (None alone: an ``LLM(...)`` keyword with no flag).
    kind: str
    only: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def taken(self) -> str:
        """The values taken, in words."""
        return {
            "bool": "a bool",
            "true": "True",
            "number": "a number >= 0",
            "unset": "only None",
        }.get(self.kind, "only " + " or ".join(map(repr, self.only)))

    def takes(self, value: Any) -> bool:
        """Whether ``value``, as a Python keyword, asks for what this engine does."""
        if self.kind == "bool":
            return isinstance(value, bool) or value is None
        if self.kind == "true":
            return value is True or value is None
        if self.kind == "unset":
            return value is None
        if self.kind == "number":
            return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        return not isinstance(value, bool) and str(value) in self.only


NO_OP_OPTIONS = (
    NoOpOption(
        "disable_log_requests", "requests are logged only with --enable-log-requests", "bool"
    ),
    NoOpOption("disable_log_stats", "no periodic stats are logged (see /metrics)", "bool"),
    NoOpOption(
        "enable_chunked_prefill", "prompts are always prefilled in chunks (Sarathi)", "true"
    ),
    NoOpOption(
        "swap_space", "a preempted request is recomputed, never swapped to host memory", "number"
    ),
    NoOpOption("kv_cache_dtype", "the KV cache takes the model's dtype", "only", ("auto",)),
    NoOpOption("tokenizer_mode", "the model's fast tokenizer is used", "only", ("auto",)),
    NoOpOption(
        "pipeline_parallel_size",
        "no pipeline parallelism (see tensor_parallel_size)",
        "only",
        ("1",),
    ),
    NoOpOption(
        "task", "the engine generates text (no embedding or scoring models)", "only", ("generate",)
    ),
    NoOpOption(
        "max_seq_len_to_capture",
        "CUDA graphs cover every context length (the kernels read the lengths from the device)",
        "number",
    ),
    NoOpOption(
        "guided_decoding_backend",
        "structured outputs run on llguidance, vLLM's 'guidance' backend",
        "only",
        ("auto", "guidance"),
    ),
    NoOpOption(
        "enable_request_id_headers", "every response carries an x-request-id header", "bool"
    ),
    NoOpOption("enable_server_load_tracking", "GET /load always tells the server's load", "bool"),
    NoOpOption(
        "cpu_offload_gb",
        "the weights stay in GPU memory (no offloading to the host)",
        "only",
        ("0",),
    ),
    # Keywords vLLM scripts pass on as None (their defaults).
    NoOpOption("code_revision", "no remote code is run", "unset"),
    NoOpOption("quantization", "weights run in the model's dtype (no quantization)", "unset"),
    NoOpOption("hf_overrides", "config.json is read as it is", "unset"),
    NoOpOption("compilation_config", "every step replays a CUDA graph of our kernels", "unset"),
    NoOpOption("limit_mm_per_prompt", "prompts are text only", "unset"),
)
