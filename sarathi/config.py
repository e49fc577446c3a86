"""Engine configuration: one dataclass per concern.

Every field carries its help string in ``metadata``; the CLI flags are generated from these
fields (see ``sarathi.entrypoints.cli_args``), so there is one definition of each option.
Derived values (number of pages, slots) are computed by the engine and passed on; no
config object is mutated after construction.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sarathi.reasoning import REASONING_PARSERS

DEMO_MODEL = "demo"


def _f(
    default: Any,
    help: str,
    *,
    aliases: tuple[str, ...] = (),
    short: tuple[str, ...] = (),
    choices: tuple[Any, ...] = (),
    kind: Any = None,
    secret: bool = False,
) -> Any:
    """A config field with its help, its other long names (``aliases``, also accepted as
    keywords), its short flags (``short``, e.g. ``-tp``), choices and kind. A ``secret``
    one is left out of the config's repr, so that no log or error message shows it."""
    meta = {"help": help, "aliases": aliases, "short": short, "choices": choices, "kind": kind}
    return field(default=default, metadata=meta, repr=not secret)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_size(value: str | int | None) -> int | None:
    """``"4GiB"`` -> 4294967296; plain integers are bytes."""
    if value is None or isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"cannot read {value!r} as a size (examples: 4GiB, 512MiB, 1000000)")
    number, unit = m.group(1), (m.group(2) or "").lower()
    if "." in number and _UNITS[unit] == 1:
        # A fraction of a byte is a unit left out ("1.5" for 1.5GiB), not a size of 1 byte.
        raise ValueError(f"{value!r} is not a whole number of bytes; add a unit, e.g. {number}GiB")
    return int(float(number) * _UNITS[unit])


# What an unset kv_layout and block_tokens mean (each is read by one kind of cache only, so
# a value the user gave is told from the default: see EngineConfig.validate).
DEFAULT_KV_LAYOUT = "mega"
DEFAULT_BLOCK_TOKENS = 16
# What an unset gpu_memory_utilization means (it is read on a GPU only).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# What an unset init_method means (read where a patch tokenizer is applied at load).
DEFAULT_INIT_METHOD = "exp"
# What an unset expected_request_tokens means (read by the mapped vAttention caches only).
DEFAULT_EXPECTED_REQUEST_TOKENS = 1024
# What unset step_timeout and worker_start_timeout mean (read by the mp and ray executors).
DEFAULT_STEP_TIMEOUT = 300.0
DEFAULT_WORKER_START_TIMEOUT = 900.0


@dataclass(frozen=True)
class ModelConfig:
    model: str = _f(
        DEMO_MODEL,
        "Hugging Face model folder or hub id; 'demo' is the embedded random-weight demo model.",
        aliases=("model_name",),
    )
    tokenizer: str | None = _f(
        None,
        "Tokenizer folder or hub id (default: the model's); may be an AdaptiVocab patch "
        "tokenizer folder. Not taken with --patch-tokenizer, which carries its own.",
    )
    revision: str | None = _f(
        None,
        "Hub revision (branch, tag or commit) of a --model given as a hub id, as vLLM's flag "
        "(default: the main branch). A local folder has none: given with one, it is "
        "warned about and unused.",
    )
    tokenizer_revision: str | None = _f(
        None,
        "Hub revision of a --tokenizer given as a hub id (default: the main branch); the "
        "model's own tokenizer comes with its --revision.",
    )
    download_dir: str | None = _f(
        None,
        "Folder that hub downloads go to and are read from, as vLLM's flag (default: the "
        "Hugging Face cache, HF_HUB_CACHE).",
    )
    hf_token: str | None = _f(
        None,
        "Hugging Face token for hub downloads, as vLLM's flag (default: $HF_TOKEN, or the "
        "token a `hf auth login` saved). Never logged; $HF_TOKEN keeps it out of the "
        "process list too.",
        secret=True,
    )
    skip_tokenizer_init: bool = _f(
        False,
        "Load no tokenizer: prompts must be token ids and outputs carry token ids but no "
        "text (no stop strings, no chat), as vLLM's flag. Refused with --tokenizer or "
        "--patch-tokenizer, which it would leave unread.",
    )
    patch_tokenizer: str | None = _f(
        None,
        "AdaptiVocab PatchTokenizer folder: the base model is "
        "patched at load time (or a patched folder is checked).",
        aliases=("patch_tokenizer_path",),
    )
    dtype: str = _f(
        "auto",
        "Weights and activations dtype. 'auto': the checkpoint's dtype on a "
        "GPU, float32 on the CPU.",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    device: str = _f(
        "auto",
        "Device to run on: 'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N' (with "
        "several mp ranks, the first of their GPUs; refused with --executor ray, where Ray "
        "assigns each rank's GPU).",
    )
    max_model_len: int | None = _f(
        None,
        "Longest sequence (prompt + output) in tokens. "
        "Default: the model's max_position_embeddings.",
    )
    seed: int = _f(
        0,
        "Seed of the global sampler RNG (requests with their own seed are "
        "reproducible regardless).",
    )
    trust_remote_code: bool = _f(False, "Accepted for compatibility; remote code is never run.")
    load_format: str = _f(
        "auto",
        "Where weights come from: 'auto' (the folder's safetensors) "
        "or 'dummy' (random values made on the device; only config.json is "
        "read; for speed measurements of real shapes).",
        choices=("auto", "dummy"),
    )
    init_method: str | None = _f(
        None,
        "Initialisation of swapped embedding rows when a patch tokenizer is applied to a base "
        f"model at load time (default: {DEFAULT_INIT_METHOD}). Refused without a patch "
        "tokenizer; ignored, with a warning, by a patched model folder (its rows were made "
        "when it was patched) and by --load-format dummy.",
        choices=("exp", "mean", "first", "last", "random"),
    )
    generation_config: str = _f(
        "auto",
        "Default sampling options of requests that do not set them: 'auto' (from the model's "
        "generation_config.json: temperature, top_p, top_k, min_p, repetition_penalty; "
        "SamplingParams' defaults where it has none), 'vllm' (SamplingParams' defaults) or a "
        "folder holding a generation_config.json. Its max_new_tokens, as in vLLM, caps every "
        "server request's output tokens and is the offline default max_tokens.",
    )
    override_generation_config: str | None = _f(
        None,
        "Generation defaults set or overridden, as vLLM's flag: a JSON object of temperature, "
        "top_p, top_k, min_p, repetition_penalty and max_new_tokens (e.g. "
        "'{\"temperature\": 0.5}'; LLM(...) takes a dict too). Merged over what "
        "--generation-config reads ('vllm': over SamplingParams' defaults).",
        kind="json",
    )
    reasoning_parser: str | None = _f(
        None,
        "How the model writes its reasoning, as vLLM's flag: 'deepseek_r1' or 'qwen3' "
        "(between <think> and </think>, which the tokenizer must have as tokens). The server "
        "returns it in the chat message's 'reasoning' field and as a Responses 'reasoning' "
        "item, apart from the answer; structured outputs constrain only what follows "
        "</think>. Default: none (the reasoning stays in the text).",
        choices=REASONING_PARSERS,
    )
    max_logprobs: int = _f(
        20,
        "Most log-probabilities a request may ask for, as vLLM's flag: SamplingParams' "
        "logprobs and prompt_logprobs, the server's logprobs, top_logprobs and "
        "prompt_logprobs. A request over it is refused (ValueError offline, 400 on the "
        "server). -1: no cap but the vocabulary's size (each token then carries up to that "
        "many entries, which the outputs and responses hold). Never more than the "
        "vocabulary's size.",
    )
    enforce_eager: bool = _f(
        False,
        "Run every step eagerly: no CUDA graphs. Otherwise, on a "
        "GPU with the triton or paged attention backend, a graph of "
        "every step shape (decode batch sizes, mixed-step token counts) "
        "is captured at startup, on every tensor-parallel rank with its "
        "all-reduces inside, and each step replays one.",
    )

    @property
    def resolved_init_method(self) -> str:
        return DEFAULT_INIT_METHOD if self.init_method is None else self.init_method


@dataclass(frozen=True)
class CacheConfig:
    kv_cache_backend: str = _f(
        "auto",
        "KV cache memory: 'auto' (cuda on a GPU, dense there with a warning where the cuda "
        "extension is not built; cpu on the host), "
        "'cuda', 'cpu' (virtual memory, pages mapped on demand) or "
        "'dense' (everything allocated up front; the reference). Refused with "
        "--attention-backend paged, which has a cache of its own.",
        choices=("auto", "cuda", "cpu", "dense"),
    )
    kv_layout: str | None = _f(
        None,
        "vAttention's KV layout: 'mega' (the default; token-major across layers: a page "
        "holds a few dozen tokens of every layer, 64 by default on a GPU, so slots grow and "
        "prefix caching shares in small blocks) or 'per_layer' (one K and one V tensor per "
        "layer, vAttention's original; blocks of about a thousand tokens with 2 MiB pages). "
        "Refused with --attention-backend paged.",
        choices=("per_layer", "mega"),
    )
    page_bytes: int | None = _f(
        None,
        "vAttention's physical page size in bytes (default: the smallest multiple of the "
        "driver's granularity, 2 MiB, that holds whole tokens, doubled until it holds 64 "
        "tokens on a GPU; a small multiple of 4 KiB holding 16 tokens on the host). "
        "Refused with --attention-backend paged.",
        aliases=("page_size", "model_block_size"),
        kind="size",
    )
    block_tokens: int | None = _f(
        None,
        "Tokens per block of the paged cache (--attention-backend paged; default: "
        f"{DEFAULT_BLOCK_TOKENS}); vLLM's --block-size. vAttention's caches have blocks of "
        "one page (--page-bytes): there it is ignored, with a warning.",
        aliases=("block_size",),
    )
    kv_cache_memory: int | None = _f(
        None,
        "Physical KV cache budget in bytes (e.g. 8GiB). Default on a GPU: what "
        "--gpu-memory-utilization leaves; on the host: 4 GiB. Given on a GPU, it must fit in "
        "what is free after the weights and a step's activations.",
        kind="size",
    )
    gpu_memory_utilization: float | None = _f(
        None,
        "Fraction of GPU memory the engine may use in total (weights, activations and KV "
        f"cache; default: {DEFAULT_GPU_MEMORY_UTILIZATION}). Not read on the CPU, nor with "
        "--kv-cache-memory (as vLLM's --kv-cache-memory-bytes): there it is ignored, with a "
        "warning.",
    )
    expected_request_tokens: int | None = _f(
        None,
        "Typical request size (prompt + output) in base-tokenizer tokens (default: "
        f"{DEFAULT_EXPECTED_REQUEST_TOKENS}): the vAttention cache has as many slots as its "
        "budget holds such requests (up to --max-num-seqs); with a patch tokenizer it is "
        "scaled by the measured reduction. Not read by the paged cache (--max-num-seqs "
        "slots) nor the dense one (slots of --max-model-len tokens): there it is ignored, "
        "with a warning.",
    )

    enable_prefix_caching: bool | None = _f(
        None,
        "Automatic prefix caching: a prompt that starts with blocks already computed (a "
        "shared system prompt, a chat's history, the other samples of n > 1) maps them into "
        "its slot instead of prefilling them. Blocks no request uses stay cached until their "
        "memory is needed (least recently used first). On by default; off with the dense KV "
        "cache (with a warning when it was asked for).",
    )

    # The values the caches read, defaults filled in (a field left None was not given, so
    # the cache that does not read it can say so; see EngineConfig.validate and LLMEngine).
    @property
    def resolved_kv_layout(self) -> str:
        return DEFAULT_KV_LAYOUT if self.kv_layout is None else self.kv_layout

    @property
    def resolved_block_tokens(self) -> int:
        return DEFAULT_BLOCK_TOKENS if self.block_tokens is None else self.block_tokens

    @property
    def resolved_gpu_memory_utilization(self) -> float:
        if self.gpu_memory_utilization is None:
            return DEFAULT_GPU_MEMORY_UTILIZATION
        return self.gpu_memory_utilization

    @property
    def resolved_expected_request_tokens(self) -> int:
        if self.expected_request_tokens is None:
            return DEFAULT_EXPECTED_REQUEST_TOKENS
        return self.expected_request_tokens


@dataclass(frozen=True)
class SchedulerConfig:
    scheduler: str = _f(
        "sarathi",
        "Batching policy: 'sarathi' (stall-free chunked prefills mixed "
        "with decodes) or 'vllm' (whole prefills first, decodes paused).",
        choices=("sarathi", "vllm"),
    )
    scheduling_policy: str = _f(
        "fcfs",
        "Which waiting request is admitted first, and which running one is preempted "
        "when the KV cache is full (vLLM's): 'fcfs' (arrival order; a request's priority "
        "must be 0) or 'priority' (the request's priority, lower first, then arrival; a "
        "waiting request preempts running ones of a worse priority for memory or a slot). "
        "Under both, the server's clients (API keys, or addresses) take turns: one "
        "client's queued requests do not hold another's behind them.",
        choices=("fcfs", "priority"),
    )
    chunk_size: int | None = _f(
        None,
        "Token budget per step (Sarathi's chunk size; vLLM's "
        "--max-num-batched-tokens). Default: 1024 on GPUs of compute "
        "capability 9.0 or newer (H100, H200), where a server gets TTFT 2.8x lower "
        "than at 512 with a p99 time between tokens of 34 ms (offline batches run "
        "1.8% faster at 512 there); 512 elsewhere, the lower tail latency "
        "(docs/benchmarks.md). The vllm scheduler prefills whole prompts: its budget "
        "is at least --max-model-len.",
        aliases=("max_num_batched_tokens",),
    )
    max_num_seqs: int = _f(
        256,
        "Most sequences running at once: the paged cache's KV slots, and the most the "
        "vAttention caches have (as many as the KV cache budget holds; see "
        "--expected-request-tokens).",
    )
    overlap_scheduling: bool | None = _f(
        None,
        "Schedule and launch step N+1 while step N "
        "runs, and process step N's tokens meanwhile (the "
        "in-process and mp executors; not ray). A sequence that stops at "
        "step N computes one token more, which is dropped. "
        "Unset: on with a CUDA device, off on the CPU (where "
        "the step runs while it is launched, so outputs "
        "would only come a step later).",
    )


@dataclass(frozen=True)
class ParallelConfig:
    tensor_parallel_size: int = _f(
        1,
        "Number of GPUs (or CPU processes) a model is split over "
        "(Megatron-style tensor parallelism).",
        aliases=("model_tensor_parallel_degree",),
        short=("-tp",),
    )
    executor: str = _f(
        "auto",
        "Where workers run: 'uni' (in this process; tensor_parallel_size "
        "1), 'mp' (one process per rank on this host, torch.distributed), 'ray' "
        "(Ray actors, across machines) or 'auto' (uni for one rank, else mp).",
        choices=("auto", "uni", "mp", "ray"),
        aliases=("distributed_executor_backend",),
    )
    disable_custom_all_reduce: bool = _f(
        False,
        "Tensor-parallel layers all-reduce with NCCL (torch.distributed) only, as vLLM's "
        "flag: no symmetric-memory all-reduce over NVLink, and no all-reduce fused into the "
        "RMSNorm after batch-1 row-parallel matmuls (docs/parallel.md), as "
        "SARATHI_SYMM_ALLREDUCE=0 does. For GPUs where those are slower (e.g. joined by PCIe: "
        "time both with benchmarks/allreduce.py). One rank, or the CPU, has no custom "
        "all-reduce to disable.",
    )
    ray_address: str | None = _f(
        None,
        "Ray cluster to join with --executor ray (e.g. "
        "'auto' or 'ray://head:10001'); default: $RAY_ADDRESS, else "
        "a private local Ray.",
    )
    step_timeout: float | None = _f(
        None,
        "Seconds a worker may take for one step before the engine declares it hung and fails "
        f"its requests (default: {DEFAULT_STEP_TIMEOUT:.0f}). Only the mp and ray executors "
        "watch their workers; the in-process one ignores it, with a warning.",
    )
    worker_start_timeout: float | None = _f(
        None,
        "Seconds workers may take to start (load weights, create the KV cache) before the "
        f"engine gives up (default: {DEFAULT_WORKER_START_TIMEOUT:.0f}). Only the mp and ray "
        "executors watch their workers; the in-process one ignores it, with a warning.",
    )

    @property
    def resolved_executor(self) -> str:
        if self.executor != "auto":
            return self.executor
        return "uni" if self.tensor_parallel_size == 1 else "mp"

    @property
    def resolved_step_timeout(self) -> float:
        return DEFAULT_STEP_TIMEOUT if self.step_timeout is None else self.step_timeout

    @property
    def resolved_worker_start_timeout(self) -> float:
        if self.worker_start_timeout is None:
            return DEFAULT_WORKER_START_TIMEOUT
        return self.worker_start_timeout


@dataclass(frozen=True)
class AttentionConfig:
    attention_backend: str = _f(
        "auto",
        "Attention implementation: 'auto' (the fastest available: "
        "triton on a CUDA device where Triton imports, else torch), "
        "'torch' (SDPA; CPU and GPU), 'triton' (our kernels over "
        "the vattention layout; GPU) or 'paged' (a block-table cache "
        "allocated up front, vLLM-style: the baseline vAttention is "
        "measured against; the same kernels on a GPU).",
        aliases=("model_attention_backend",),
        choices=("auto", "torch", "triton", "paged"),
    )


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs, grouped."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    SECTIONS = ("model", "cache", "scheduler", "parallel", "attention")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Build from flat field names (``LLM(model=..., chunk_size=...)``); aliases accepted."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in cls.SECTIONS}
        lookup = field_index()
        for key, value in kwargs.items():
            if key not in lookup:
                known = ", ".join(sorted(n for n in lookup if n == lookup[n][1].name))
                raise TypeError(f"unknown engine option {key!r}; known options: {known}")
            section, f = lookup[key]
            value = normalize_value(f, value)
            groups[section][f.name] = value
        sub = {name: SECTION_TYPES[name](**groups[name]) for name in cls.SECTIONS}
        config = cls(**sub)
        config.validate()
        return config

    def validate(self) -> None:
        s, c = self.scheduler, self.cache
        # An empty name is a mistake (a shell variable left unset, `--model "$MODEL"`), not a
        # request for the random-weight demo model, which leaving the option out gives.
        if not self.model.model.strip():
            raise ValueError(
                "model is empty; pass a model folder or hub id (leave it out for the demo model)"
            )
        m = self.model
        # No tokenizer is loaded: a --tokenizer would go unread, and a patch tokenizer (given
        # as either) unapplied, so a base checkpoint would run with its base rows.
        if m.skip_tokenizer_init and (m.tokenizer is not None or m.patch_tokenizer is not None):
            given = "tokenizer" if m.tokenizer is not None else "patch_tokenizer"
            raise ValueError(
                f"{given} is not loaded with skip_tokenizer_init (token ids in and out), and a "
                "patch tokenizer would not be applied to the weights; leave out one of them"
            )
        # A patch tokenizer folder carries its own base tokenizer, and it is what is loaded:
        # a --tokenizer beside it would go unread.
        if (
            m.tokenizer is not None
            and m.patch_tokenizer is not None
            and m.tokenizer != m.patch_tokenizer
        ):
            raise ValueError(
                "tokenizer is not read with patch_tokenizer (a patch tokenizer folder carries "
                "its base tokenizer, which is the one used); leave out tokenizer"
            )
        if s.chunk_size is not None and s.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {s.chunk_size}")
        if s.max_num_seqs <= 0:
            raise ValueError(f"max_num_seqs must be positive, got {s.max_num_seqs}")
        if c.gpu_memory_utilization is not None and not 0 < c.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {c.gpu_memory_utilization}"
            )
        if c.expected_request_tokens is not None and c.expected_request_tokens <= 0:
            raise ValueError(
                f"expected_request_tokens must be positive, got {c.expected_request_tokens}"
            )
        # Checked here, not where the cache is built: there page_bytes 0 reads as "the
        # default", and block_tokens is only read by the paged backend.
        if c.page_bytes is not None and c.page_bytes <= 0:
            raise ValueError(f"page_bytes must be positive, got {c.page_bytes}")
        if c.block_tokens is not None and c.block_tokens <= 0:
            raise ValueError(f"block_tokens must be positive, got {c.block_tokens}")
        # The paged baseline builds its own block-table cache and never reads vAttention's
        # options: refused, not dropped unsaid. ("auto" never resolves to paged: it is named.)
        if self.attention.attention_backend == "paged":
            unread = [
                name
                for name, given in (
                    ("kv_cache_backend", c.kv_cache_backend != "auto"),
                    ("kv_layout", c.kv_layout is not None),
                    ("page_bytes", c.page_bytes is not None),
                )
                if given
            ]
            if unread:
                raise ValueError(
                    f"{', '.join(unread)} configure{'s' if len(unread) == 1 else ''} "
                    "vAttention's KV cache, which "
                    "attention_backend 'paged' does not use (its block-table cache is sized "
                    "by block_tokens); leave them out, or use another attention backend"
                )
        if m.max_logprobs < -1:
            raise ValueError(
                f"max_logprobs must be >= 0, or -1 for no cap but the vocabulary's size, "
                f"got {m.max_logprobs}"
            )
        if self.model.max_model_len is not None and self.model.max_model_len <= 0:
            raise ValueError(f"max_model_len must be positive, got {self.model.max_model_len}")
        seed = self.model.seed
        # The bound: torch's generators take 64 bits, and a larger seed would fail only after
        # the weights load, as "Overflow when unpacking long long" (2**63 leaves room for the
        # dummy loader's seed + rank).
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        p = self.parallel
        if p.tensor_parallel_size < 1:
            raise ValueError(
                f"tensor_parallel_size must be at least 1, got {p.tensor_parallel_size}"
            )
        if p.tensor_parallel_size > 1 and p.resolved_executor == "uni":
            raise ValueError(
                "the uni executor runs one rank; use --executor mp or ray for "
                f"tensor_parallel_size {p.tensor_parallel_size}"
            )
        if p.ray_address is not None and p.resolved_executor != "ray":
            raise ValueError(
                f"ray_address is for the ray executor; this run's is {p.resolved_executor!r} "
                "(add --executor ray)"
            )
        # Ray gives each rank actor its own GPU, which it sees as cuda:0: an index would be
        # checked against the driver's host and then not used.
        if p.resolved_executor == "ray" and re.fullmatch(r"cuda:\d+", m.device.strip()):
            raise ValueError(
                f"device {m.device!r}: the ray executor places each rank on a GPU Ray assigns; "
                "use device 'cuda' (or choose the GPUs with CUDA_VISIBLE_DEVICES)"
            )
        # Refused when asked for, not dropped unsaid: under ray a step is one blocking actor
        # call, which the executor cannot overlap.
        if s.overlap_scheduling and p.resolved_executor == "ray":
            raise ValueError(
                "overlap_scheduling is not done by the ray executor (a step is one blocking "
                "actor call); leave it out, or use --executor mp"
            )
        for name in ("step_timeout", "worker_start_timeout"):
            value = getattr(p, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")


SECTION_TYPES = {
    "model": ModelConfig,
    "cache": CacheConfig,
    "scheduler": SchedulerConfig,
    "parallel": ParallelConfig,
    "attention": AttentionConfig,
}

# Other names of some options' values: the seed project's, and vLLM's.
VALUE_ALIASES = {
    "attention_backend": {
        "fa_vattn": "auto",
        "fa_paged": "paged",
        "flashinfer_vattn": "auto",
        "no_op": "torch",
    },
    # vLLM's names (its advice on GPUs without bfloat16 is --dtype half).
    "dtype": {"half": "float16", "float": "float32"},
}


def field_type(annotation: Any) -> tuple[type, bool]:
    """The type a field's annotation names (the first besides None), and whether it takes
    None. Annotations are strings here (postponed evaluation)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing})  # our own annotations, never user input
    args = typing.get_args(annotation)
    named = [a for a in args if a is not type(None)]
    return (named[0] if named else annotation), type(None) in args


def _check_type(f: Any, value: Any) -> None:
    """ValueError naming the option when a number or switch is given a value of another
    type (``LLM(chunk_size="256")``); the CLI's flags are converted before they get here."""
    kind, optional = field_type(f.type)
    if value is None:
        if not optional:
            raise ValueError(f"{f.name} must be set, got None")
        return
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{f.name} must be True or False, got {value!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{f.name} must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{f.name} must be a number, got {value!r}")


def _dtype_name(value: Any) -> Any:
    """A torch.dtype's name (``torch.bfloat16`` -> ``"bfloat16"``): vLLM's ``LLM(dtype=...)``
    takes either. torch is not imported for it: a torch.dtype means torch is loaded."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def normalize_value(f: Any, value: Any) -> Any:
    """Apply value aliases, size parsing and choice checks for one field."""
    if f.name == "dtype":
        value = _dtype_name(value)
    if f.metadata.get("kind") == "json" and value is not None:
        value = _json_object(f.name, value)
    value = VALUE_ALIASES.get(f.name, {}).get(value, value)
    if f.metadata.get("kind") == "size":
        value = parse_size(value)
    _check_type(f, value)
    choices = f.metadata.get("choices") or ()
    if choices and value is not None and value not in choices:  # None: unset (_check_type)
        raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def _json_object(name: str, value: Any) -> str:
    """A JSON-object option as its JSON text: a mapping given in code, or text (a flag's)
    that must read as an object."""
    if isinstance(value, Mapping):
        try:
            return json.dumps(dict(value), sort_keys=True)
        except TypeError as e:
            raise ValueError(f"{name} must be JSON-serializable: {e}") from e
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a JSON object or a dict, got {value!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} is not valid JSON ({e}): {value!r}") from e
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, got {value!r}")
    return value


def field_index() -> dict[str, tuple[str, Any]]:
    """Flat name (and alias) -> (section, dataclass field)."""
    out: dict[str, tuple[str, Any]] = {}
    for section, typ in SECTION_TYPES.items():
        for f in fields(typ):
            out[f.name] = (section, f)
            for alias in f.metadata.get("aliases", ()):
                out[alias] = (section, f)
    return out
