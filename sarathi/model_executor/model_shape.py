"""The parts of a Hugging Face ``config.json`` our models read, parsed once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
# A config.json without "architectures" names its family by model_type alone; transformers
# then builds that family's causal LM, and so do we.
_CAUSAL_LM_OF_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    sliding_windows: tuple[int | None, ...]  # per layer; None = full attention
    torch_dtype: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


def load_model_shape(path: str) -> ModelShape:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path!r} has no config.json; pass a Hugging Face model folder")
    with open(cfg_path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON: {e}") from e
    return parse_model_shape(raw)


def parse_model_shape(raw: dict[str, Any]) -> ModelShape:
    archs = raw.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    model_type = raw.get("model_type")
    if not archs and isinstance(model_type, str):
        arch = _CAUSAL_LM_OF_MODEL_TYPE.get(model_type)
    if arch is None:
        raise ValueError(
            f"unsupported model architecture {archs or raw.get('model_type')!r}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    try:
        hidden = int(raw["hidden_size"])
        heads = int(raw["num_attention_heads"])
        layers = int(raw["num_hidden_layers"])
        vocab = int(raw["vocab_size"])
        inter = int(raw["intermediate_size"])
    except KeyError as e:
        raise ValueError(f"config.json lacks the field {e.args[0]!r}") from e
    kv_heads = int(raw.get("num_key_value_heads") or heads)
    head_dim = int(raw.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise ValueError(
            f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )
    rope_params = dict(raw.get("rope_parameters") or {})
    scaling = raw.get("rope_scaling") or None
    if scaling:
        rope_params.update(scaling)
    theta = float(rope_params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = rope_params.get("rope_type", rope_params.get("type", "default"))
    rope_scaling = None if rope_type == "default" else dict(rope_params, rope_type=rope_type)
    window = raw.get("sliding_window")
    layer_types = raw.get("layer_types")
    if arch == "MistralForCausalLM":
        windows = tuple([int(window) if window else None] * layers)
    elif layer_types:
        windows = tuple(
            int(window) if t == "sliding_attention" and window else None for t in layer_types
        )
    elif raw.get("use_sliding_window") and window:
        first = int(raw.get("max_window_layers", layers))
        windows = tuple(int(window) if i >= first else None for i in range(layers))
    else:
        windows = tuple([None] * layers)
    qkv_bias = arch == "Qwen2ForCausalLM" or bool(raw.get("attention_bias", False))
    return ModelShape(
        architecture=arch,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=rope_scaling,
        max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        qk_norm=arch == "Qwen3ForCausalLM",
        sliding_windows=windows,
        torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
        raw=raw,
    )
