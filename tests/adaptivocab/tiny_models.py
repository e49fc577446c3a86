"""Helpers for the finetune/eval tests: tiny random Llama folders and corpus files."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from pathlib import Path

import torch


def tiny_llama_folder(
    folder: Path,
    vocab: int,
    tied: bool = False,
    layers: int = 3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=tied,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(str(folder))
    return folder


def write_corpus(path: Path, docs: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n\n".join(docs))
    return path


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and much faster on a machine busy with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
