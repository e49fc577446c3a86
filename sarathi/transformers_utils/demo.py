"""The embedded demo model: a small random-weight Llama and a real byte-level BPE tokenizer.

It lets every command run on a fresh machine with no downloads. It is built
deterministically on first use from text shipped with the package and cached under
``$SARATHI_CACHE`` (default ``~/.cache/sarathi``). Its weights are random: outputs are
gibberish by design.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources

import torch

from sarathi.envs import ENV_VARS, env

DEMO_NOTE = "demo model: random weights, the text it writes is meaningless"
_VERSION = 2
_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "hidden_act": "silu",
    "attention_bias": False,
    "initializer_range": 0.02,
}
_VOCAB = 2048
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_root() -> str:
    return os.path.expanduser(env("SARATHI_CACHE") or ENV_VARS["SARATHI_CACHE"].default)


def _demo_corpus() -> str:
    return (
        resources.files("sarathi.transformers_utils")
        .joinpath("demo_corpus.txt")
        .read_text(encoding="utf-8")
    )


def demo_model_folder() -> str:
    """Where the demo model is, or will be once it is built (its name follows its recipe)."""
    recipe = json.dumps([_VERSION, _CONFIG, _VOCAB, _demo_corpus()])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return os.path.join(cache_root(), f"demo-{key}")


def demo_model_built(folder: str) -> bool:
    """Whether the demo model's ``folder`` holds a whole model (it is renamed into place)."""
    return os.path.isfile(os.path.join(folder, "model.safetensors"))


def demo_model_path() -> str:
    """Folder of the demo model, building it the first time."""
    path = demo_model_folder()
    if demo_model_built(path):
        return path
    root = cache_root()
    try:
        os.makedirs(root, exist_ok=True)
        # Build beside the final folder and rename: concurrent first runs never see half a model.
        tmp = tempfile.mkdtemp(prefix=".demo-", dir=root)
    except OSError as e:
        # Bare, "[Errno 17] File exists: 'x'" does not say which setting is at fault.
        reason = "it is a file" if os.path.isfile(root) else (e.strerror or str(e))
        raise OSError(
            f"cannot build the demo model under {root!r} ($SARATHI_CACHE): {reason}; "
            "point SARATHI_CACHE at a writable folder"
        ) from e
    try:
        vocab_size = _write_tokenizer(tmp, _demo_corpus())
        _write_model(tmp, vocab_size)
        try:
            os.rename(tmp, path)
        except OSError:
            if not demo_model_built(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_tokenizer(out: str, corpus: str) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB,
        min_frequency=2,
        special_tokens=_SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus.splitlines(keepends=True), trainer=trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "chat_template": _CHAT_TEMPLATE,
        "model_max_length": _CONFIG["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return tok.get_vocab_size()


def _write_model(out: str, vocab_size: int) -> None:
    from safetensors.torch import save_file

    eos = 0  # <|endoftext|> is the first special token
    im_end = 2
    config = dict(
        _CONFIG, vocab_size=vocab_size, bos_token_id=None, eos_token_id=eos, note=DEMO_NOTE
    )
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": [eos, im_end]}, f)
    save_file(
        _random_weights(config), os.path.join(out, "model.safetensors"), metadata={"format": "pt"}
    )  # one key: safetensors orders keys at random


def _random_weights(c: dict) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * c["initializer_range"]

    w = {
        "model.embed_tokens.weight": normal(v, h),
        "model.norm.weight": torch.ones(h),
        "lm_head.weight": normal(v, h),
    }
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(h)
        w[p + "post_attention_layernorm.weight"] = torch.ones(h)
        w[p + "self_attn.q_proj.weight"] = normal(q, h)
        w[p + "self_attn.k_proj.weight"] = normal(kv, h)
        w[p + "self_attn.v_proj.weight"] = normal(kv, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, q)
        w[p + "mlp.gate_proj.weight"] = normal(inter, h)
        w[p + "mlp.up_proj.weight"] = normal(inter, h)
        w[p + "mlp.down_proj.weight"] = normal(h, inter)
    return w
