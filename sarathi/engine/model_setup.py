"""What the engine serves, resolved once from the configuration: the model folder and its
shape, the tokenizer (and AdaptiVocab patch), device, dtype, context length and EOS ids."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sarathi.config import EngineConfig, ModelConfig
from sarathi.envs import check_all, env
from sarathi.model_executor.model_shape import ModelShape, load_model_shape
from sarathi.sampling_params import MODEL_DEFAULT_KEYS, SamplingParams
from sarathi.transformers_utils.demo import DEMO_NOTE
from sarathi.transformers_utils.hub import DEMO_NAMES, HubOptions, resolve_model_path
from sarathi.transformers_utils.tokenizer import (
    as_patch_tokenizer,
    eos_token_ids,
    get_tokenizer,
    is_patch_tokenizer_dir,
    tokenizer_eos_id,
)

if TYPE_CHECKING:
    from adaptivocab import PatchTokenizer

logger = logging.getLogger("sarathi")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSetup:
    name: str  # as the user gave it
    path: str  # the local folder
    is_demo: bool
    shape: ModelShape
    tokenizer: Any  # a Hugging Face tokenizer, an adaptivocab.PatchTokenizer, or None
    # (--skip-tokenizer-init: token ids in and out)
    patch: PatchTokenizer | None  # when the tokenizer is one
    patch_at_load: str | None  # patch the base checkpoint's rows with this folder's patch
    reduction_ratio: float  # patched / base tokens (AdaptiVocab); 1 without a patch
    device: torch.device
    dtype: torch.dtype
    max_model_len: int
    eos_ids: frozenset[int]
    eos_id: int | None  # the tokenizer's own; the rest of eos_ids come from generation_config
    # Sampling options for requests that do not set them (--generation-config).
    default_sampling: dict[str, Any]
    # generation_config.json's max_new_tokens (--generation-config): as vLLM reads it, a
    # server-wide cap on a request's output tokens, and the offline default max_tokens.
    max_new_tokens: int | None


def resolve_device(name: str) -> torch.device:
    """The engine's device, with its index when it is a GPU ("cuda" and "auto" name the
    current device), so that threads other than the caller's can make it current."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    unknown = ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise unknown from None
    if device.type not in ("cpu", "cuda"):
        raise unknown
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available")
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {name!r} was asked for but this machine has "
            f"{torch.cuda.device_count()} CUDA GPU(s)"
        )
    return device


def bind_thread_device(device: torch.device) -> None:
    """Make ``device`` current for the calling thread: Triton kernels and CUDA graphs launch
    on the current device, not on their tensors' (and CUDA's current device is per thread,
    so every thread that runs steps binds it)."""
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else 0)


def resolve_dtype(name: str, checkpoint_dtype: str | None, device: torch.device) -> torch.dtype:
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cpu":
        return torch.float32  # half precision matmuls are slow or missing on most CPUs
    return _DTYPES.get(str(checkpoint_dtype), torch.bfloat16)


def resolve_chunk_size(config: EngineConfig, device: torch.device) -> int:
    """The token budget per step: as configured, else by GPU class (measured on an H200:
    a server at 1024 has TTFT 2.8x lower than at 512, with a p99 time between tokens of 34
    ms against 20; see docs/benchmarks.md)."""
    if config.scheduler.chunk_size is not None:
        return config.scheduler.chunk_size
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9:
        return 1024
    return 512


@dataclass(frozen=True)
class GenerationDefaults:
    """What ``--generation-config`` takes from a generation_config.json."""

    sampling: dict[str, Any]  # options of MODEL_DEFAULT_KEYS a request leaves unset
    max_new_tokens: int | None  # a cap on every request's output tokens


# What --override-generation-config sets: the sampling defaults and the output cap.
OVERRIDE_KEYS = (*MODEL_DEFAULT_KEYS, "max_new_tokens")


def load_generation_defaults(
    mode: str, model_path: str, override: str | None = None
) -> GenerationDefaults:
    """The defaults ``--generation-config`` asks for (from the model folder's
    generation_config.json: 'auto'; none: 'vllm'; or another folder's), with
    ``--override-generation-config``'s (a JSON object) over them."""
    found = _generation_file(mode, model_path)
    if override is None:
        return found
    extra = json.loads(override)
    unknown = sorted(set(extra) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(
            f"override_generation_config cannot set {', '.join(unknown)}; it sets "
            f"{', '.join(OVERRIDE_KEYS)}"
        )
    for key, value in extra.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"override_generation_config: {key} must be a number, got {value!r}")
    cap = extra.get("max_new_tokens", found.max_new_tokens)
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ValueError("override_generation_config: max_new_tokens must be an integer >= 1")
    sampling = {**found.sampling, **{k: v for k, v in extra.items() if k != "max_new_tokens"}}
    try:
        SamplingParams(**sampling)  # its own checks, naming the option
    except ValueError as e:
        raise ValueError(f"override_generation_config: {e}") from e
    logger.info("generation defaults after the override: %s, max_new_tokens %s", sampling, cap)
    return GenerationDefaults(sampling, cap)


def _generation_file(mode: str, model_path: str) -> GenerationDefaults:
    none = GenerationDefaults({}, None)
    if mode == "vllm":
        return none
    folder = model_path if mode == "auto" else mode
    path = os.path.join(folder, "generation_config.json")
    if not os.path.isfile(path):
        if mode != "auto":
            raise ValueError(f"--generation-config {mode!r} has no generation_config.json")
        return none
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"cannot read {path}: not a JSON object")
    sampling = {k: raw[k] for k in MODEL_DEFAULT_KEYS if isinstance(raw.get(k), (int, float))}
    if sampling:
        logger.info("default sampling options from %s: %s", path, sampling)
    cap = raw.get("max_new_tokens")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        cap = None
    else:
        logger.info("max_new_tokens %d from %s caps every request's output tokens", cap, path)
    return GenerationDefaults(sampling, cap)


def model_context(shape: ModelShape) -> int:
    """The longest context the model serves (vLLM's derivation): its position embeddings,
    stretched by a RoPE scaling that stretches positions (linear, dynamic, yarn)."""
    scaling = shape.rope_scaling or {}
    if scaling.get("rope_type") in ("linear", "dynamic", "yarn"):
        base = scaling.get("original_max_position_embeddings", shape.max_position_embeddings)
        return int(base * float(scaling.get("factor", 1.0)))
    return shape.max_position_embeddings


def _patch_at_load(
    config: EngineConfig,
    path: str,
    shape: ModelShape,
    tokenizer: Any,
    patch: PatchTokenizer | None,
) -> str | None:
    """The patch tokenizer folder whose n-gram rows the loader must build into a base
    checkpoint (None: none to build). ValueError where the tokenizer does not fit the
    weights: a patch for another vocabulary, or a patched folder served with another patch
    or with the base tokenizer (its swapped rows would take other meanings silently)."""
    mc = config.model
    patched_folder = is_patch_tokenizer_dir(path)
    if patch is None:
        if tokenizer is not None and patched_folder:
            raise ValueError(
                f"{mc.model!r} is a patched model folder but the tokenizer given is not its "
                "patch tokenizer; leave out --tokenizer"
            )
        return None
    from adaptivocab import AdaptiVocabError
    from adaptivocab.embeddings import (  # what adaptivocab loads lazily
        check_model_tokenizer,
        check_vocab,
    )
    from adaptivocab.patch import VocabPatch

    try:
        check_vocab(shape.vocab_size, len(patch))
    except AdaptiVocabError as e:
        raise ValueError(f"the patch tokenizer does not fit this model: {e}") from e
    if not patched_folder:
        # A patch of another tokenizer of about the same size passes check_vocab, and every
        # id would then read another token's row.
        try:
            check_model_tokenizer(path, patch.base_tokenizer)
        except AdaptiVocabError as e:
            raise ValueError(str(e)) from e
        # --patch-tokenizer, or a --tokenizer that is a patch tokenizer folder.
        return mc.patch_tokenizer or resolve_model_path(
            mc.tokenizer or path, "tokenizer", _tokenizer_hub(mc)
        )
    try:
        folder_ngrams = dict(VocabPatch.load(Path(path)).ngrams)
    except AdaptiVocabError as e:
        raise ValueError(f"cannot read the patched model folder {mc.model!r}: {e}") from e
    if folder_ngrams != dict(patch.ngram_pieces):
        raise ValueError(
            f"{mc.model!r} was patched with a different patch tokenizer than the one given; "
            "leave out --patch-tokenizer/--tokenizer, or pass the base model"
        )
    return None


def _check_init_method(
    config: EngineConfig, patch: PatchTokenizer | None, patch_at_load: str | None
) -> None:
    """init_method only initialises the rows a patch tokenizer's n-grams get when it is built
    into a base checkpoint at load: given otherwise it was taken and dropped without a word.
    ValueError without any patch tokenizer (nothing it could mean); a warning where the rows
    come from elsewhere (a patched folder's own, or dummy weights)."""
    mc = config.model
    if mc.init_method is None:
        return
    if patch is None:
        raise ValueError(
            "init_method initialises the rows of a patch tokenizer's new tokens when it is "
            "applied to a base model at load (--patch-tokenizer, or a --tokenizer that is a "
            "patch tokenizer folder), and none is given; leave it out"
        )
    if patch_at_load is None:
        logger.warning(
            "init_method %s is ignored: %r is a patched model folder, whose rows were made "
            "when it was patched (`python -m adaptivocab patch-model --init`)",
            mc.init_method,
            mc.model,
        )
    elif mc.load_format == "dummy":
        logger.warning(
            "init_method %s is ignored with load_format dummy: every row is random",
            mc.init_method,
        )


def _config_note(path: str) -> str | None:
    """The ``note`` of a model folder's config.json (the demo model writes one)."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            note = json.load(f).get("note")
    except (OSError, ValueError, AttributeError):
        return None
    return note if isinstance(note, str) else None


def _sizing_ratio(patch: PatchTokenizer | None, folder: str) -> float:
    """The reduction ratio the KV cache is sized from: the patch tokenizer's measured one,
    else 1 (the base vocabulary's), said aloud: a patch served without its statistics
    gets none of the slots its reduction would buy, and nothing else would tell."""
    if patch is None:
        return 1.0
    ratio = patch.reduction_ratio
    if ratio is None:
        logger.warning(
            "the patch tokenizer %s has no measured reduction ratio (no reduction_stats.json, "
            "or no ratio in it): the KV cache is sized as for the base vocabulary (ratio 1); "
            "measure it with `python -m adaptivocab stats --patch-tokenizer %s --corpus FILE "
            "--write`",
            folder,
            folder,
        )
        return 1.0
    return ratio


def _model_hub(mc: ModelConfig) -> HubOptions:
    return HubOptions(mc.revision, mc.download_dir, mc.hf_token)


def _tokenizer_hub(mc: ModelConfig) -> HubOptions:
    """How a --tokenizer hub id is fetched (--tokenizer-revision); the model's own tokenizer
    is read from the model's folder, fetched at its --revision already."""
    revision = mc.tokenizer_revision if mc.tokenizer is not None else None
    return HubOptions(revision, mc.download_dir, mc.hf_token)


def resolve_model(config: EngineConfig) -> ModelSetup:
    mc = config.model
    path = resolve_model_path(mc.model, "model", _model_hub(mc))
    # By name, or by its folder (a path to it, a copy, a patched copy): its config says so.
    is_demo = mc.model in DEMO_NAMES or _config_note(path) == DEMO_NOTE
    if is_demo:
        logger.warning("using the %s", DEMO_NOTE)
    shape = load_model_shape(path)
    tokenizer = (
        None
        if mc.skip_tokenizer_init
        else get_tokenizer(
            mc.tokenizer or path,
            mc.patch_tokenizer,
            named_by_user=mc.tokenizer is not None,
            hub=_tokenizer_hub(mc),
        )
    )
    patch = as_patch_tokenizer(tokenizer)
    patch_at_load = _patch_at_load(config, path, shape, tokenizer, patch)
    _check_init_method(config, patch, patch_at_load)
    device = resolve_device(mc.device)
    longest = model_context(shape)
    check_all()
    long_ok = env("SARATHI_ALLOW_LONG_MAX_MODEL_LEN") == "1"
    if mc.max_model_len is not None and mc.max_model_len > longest and not long_ok:
        raise ValueError(
            f"max_model_len {mc.max_model_len} is longer than this model's context of "
            f"{longest} tokens (max_position_embeddings, times a linear, dynamic or yarn "
            "RoPE scaling factor): positions past it were never trained "
            "(SARATHI_ALLOW_LONG_MAX_MODEL_LEN=1 takes it anyway)"
        )
    defaults = load_generation_defaults(mc.generation_config, path, mc.override_generation_config)
    return ModelSetup(
        name=mc.model,
        path=path,
        is_demo=is_demo,
        shape=shape,
        tokenizer=tokenizer,
        patch=patch,
        patch_at_load=patch_at_load,
        reduction_ratio=_sizing_ratio(patch, mc.patch_tokenizer or mc.tokenizer or path),
        device=device,
        dtype=resolve_dtype(mc.dtype, shape.torch_dtype, device),
        max_model_len=mc.max_model_len or longest,
        eos_ids=frozenset(eos_token_ids(tokenizer, path)),
        eos_id=tokenizer_eos_id(tokenizer),
        default_sampling=defaults.sampling,
        max_new_tokens=defaults.max_new_tokens,
    )
