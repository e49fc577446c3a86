"""Small random-weight Hugging Face models for tests (built with transformers, saved as
safetensors), and helpers to compare our engine with transformers on them."""

from __future__ import annotations

import os

import torch

ARCHS = ("llama", "mistral", "qwen2", "qwen3")


def tiny_config(arch: str, **overrides):
    import transformers

    common = dict(vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        common["rope_scaling"] = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        cls = transformers.LlamaConfig
    elif arch == "mistral":
        common["sliding_window"] = 4096
        cls = transformers.MistralConfig
    elif arch == "qwen2":
        common["tie_word_embeddings"] = True
        common["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
        cls = transformers.Qwen2Config
    elif arch == "qwen3":
        common["head_dim"] = 32  # != hidden / heads, as in Qwen3-0.6B
        common["tie_word_embeddings"] = True
        cls = transformers.Qwen3Config
    else:
        raise ValueError(arch)
    common.update(overrides)
    return cls(**common)


def save_tiny_model(
    arch: str, path: str, seed: int = 0, weight_std: float = 0.1, **overrides
) -> str:
    import transformers

    torch.manual_seed(seed)
    config = tiny_config(arch, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    # Larger-than-default weights make logits spread out, so greedy ties are unlikely (a
    # wide model wants about 1/sqrt(hidden): larger weights amplify rounding layer by layer).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, weight_std)
    model.save_pretrained(path, safe_serialization=True)
    save_tiny_tokenizer(path, config.vocab_size)
    return path


def save_tiny_tokenizer(path: str, vocab_size: int) -> None:
    """A byte-level BPE of exactly ``vocab_size`` tokens, trained on the demo corpus."""
    import json
    from importlib import resources

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = resources.files("sarathi.transformers_utils").joinpath("demo_corpus.txt").read_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                   "eos_token": "</s>", "pad_token": "<pad>"}, f)


def byte_fallback_tokenizer():
    """A SentencePiece-style BPE with byte fallback (Llama's, Mistral's decoder): a run of
    byte tokens that is not valid UTF-8 decodes to one U+FFFD per byte."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab.update({"▁": 259, "▁ok": 260, "ok": 261})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def hf_model(path: str):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        path, torch_dtype=torch.float32, attn_implementation="eager").eval()


def hf_greedy(model, prompt: list[int], max_new: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                             eos_token_id=None, pad_token_id=0, min_new_tokens=max_new)
    return out[0, len(prompt):].tolist()


def random_prompts(count: int, vocab: int, seed: int, min_len: int = 3, max_len: int = 70
                   ) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len, (count,), generator=g).tolist()
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lens]


THINK_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{%- endif %}{%- endif %}"
)


def save_thinking_model(path: str, special: bool = False) -> str:
    """A tiny random Qwen3 whose tokenizer (the tiny one's, plus ``<think>`` and
    ``</think>`` as tokens of their own, special or not) can be split by a reasoning
    parser; its chat template writes an empty think block when ``enable_thinking`` is
    false, as Qwen3's does."""
    import json

    from tokenizers import AddedToken, Tokenizer

    save_tiny_model("qwen3", path, vocab_size=386)
    save_tiny_tokenizer(path, 384)
    file = os.path.join(path, "tokenizer.json")
    tok = Tokenizer.from_file(file)
    tags = [AddedToken(t, special=special, normalized=False) for t in ("<think>", "</think>")]
    (tok.add_special_tokens if special else tok.add_tokens)(tags)
    assert tok.get_vocab_size() == 386
    tok.save(file)
    config_file = os.path.join(path, "tokenizer_config.json")
    with open(config_file) as f:
        config = json.load(f)
    config["chat_template"] = THINK_TEMPLATE
    with open(config_file, "w") as f:
        json.dump(config, f)
    return path
