"""Bits per byte: a language-model quality measure that is fair across tokenizers.

bpb = (total negative log-likelihood of the text, in bits) / (UTF-8 bytes of the text).
Per-token loss is not comparable between a base and a patched tokenizer (a
patched token covers more text); per byte it is. To be fair every token of a
document is scored, the first included: each document is encoded with the
tokenizer's special tokens, and if that does not start with BOS, BOS (or, for a
tokenizer without one, EOS) is put in front as the context the first token is
predicted from. Both tokenizers of a patched model share their special tokens,
so both condition on the same thing. Documents longer than ``seq_len`` are
scored in windows that overlap by half, every token exactly once and each with
at least half a window of context. The bytes are those of the document text
(separators between documents are not counted, and no token predicts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from adaptivocab.errors import AdaptiVocabError
from adaptivocab.training_data import encode_documents


def _start_id(tokenizer: Any) -> int:
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    raise AdaptiVocabError(
        "the tokenizer has neither BOS nor EOS; bits per byte needs a start-of-document token"
    )


def _windows(ids: list[int], seq_len: int) -> list[tuple[list[int], int]]:
    """(window ids, index in the window of its first scored target); targets are ids[1:]."""
    out: list[tuple[list[int], int]] = []
    done, n = 1, len(ids)
    while done < n:
        end = min(n, seq_len if done == 1 else done + seq_len // 2)
        start = max(0, end - seq_len)
        out.append((ids[start:end], done - start))
        done = end
    return out


def take_bytes(docs: Sequence[str], max_bytes: int | None) -> list[str]:
    """The leading documents whose UTF-8 size first reaches ``max_bytes`` (all of them for None)."""
    if max_bytes is None:
        return list(docs)
    out, total = [], 0
    for d in docs:
        if total >= max_bytes:
            break
        out.append(d)
        total += len(d.encode("utf-8"))
    return out


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    seq_len: int = 768,
    batch_tokens: int = 8192,
    device: torch.device | str | None = None,
    bf16: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``texts`` with ``model`` under ``tokenizer`` (HF or PatchTokenizer).

    Returns bpb, nll_bits, tokens (scored), bytes, tokens_per_byte, documents.
    ``bf16`` None means bf16 autocast on a GPU, fp32 on CPU; log-softmax is fp32 either way.
    """
    texts = [t for t in texts if t]
    if not texts:
        raise AdaptiVocabError("no text to score; pass a non-empty corpus")
    if seq_len < 2:
        raise AdaptiVocabError(f"seq_len must be at least 2, got {seq_len}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = dev.type == "cuda" if bf16 is None else bf16
    start = _start_id(tokenizer)
    windows: list[tuple[list[int], int]] = []
    for ids in encode_documents(tokenizer, texts, progress=progress):
        ids = list(ids)
        if not ids or ids[0] != start:
            ids = [start, *ids]
        windows.extend(_windows(ids, seq_len))
    windows.sort(key=lambda w: len(w[0]), reverse=True)
    was_training = model.training
    model.eval()
    nll = 0.0
    scored = 0
    bar = tqdm(total=len(windows), desc="scoring", unit="win", disable=not progress, leave=False)
    i = 0
    while i < len(windows):
        width = len(windows[i][0])  # longest first, so this is the batch's width
        rows = max(1, batch_tokens // width)
        group = windows[i : i + rows]
        i += len(group)
        # Right padding needs no attention mask: causal attention never looks ahead.
        batch = torch.zeros(len(group), width, dtype=torch.long)
        for r, (w, _) in enumerate(group):
            batch[r, : len(w)] = torch.tensor(w, dtype=torch.long)
        batch = batch.to(dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=batch).logits
        for r, (w, first) in enumerate(group):
            lp = torch.log_softmax(logits[r, first - 1 : len(w) - 1].float(), dim=-1)
            target = batch[r, first : len(w)]
            nll -= float(lp.gather(1, target.unsqueeze(1)).sum())
            scored += len(w) - first
        bar.update(len(group))
    bar.close()
    if was_training:
        model.train()
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    bits = nll / math.log(2)
    return {
        "bpb": bits / nbytes,
        "nll_bits": bits,
        "tokens": scored,
        "bytes": nbytes,
        "tokens_per_byte": scored / nbytes,
        "documents": len(texts),
        "seq_len": seq_len,
    }


def held_out_texts(
    paths: Sequence[str], split: str = "held-out", max_bytes: int | None = None
) -> list[str]:
    """Documents to score.

    Either the 10% hash split that build and finetune never train on, or all of them.
    """
    from adaptivocab.corpus import load_corpus, load_documents

    if split not in ("held-out", "all"):
        raise AdaptiVocabError(f"--split must be held-out or all, got {split!r}")
    docs = load_corpus(paths).held_out if split == "held-out" else load_documents(paths)
    return take_bytes(docs, max_bytes)


def score_folder(
    model_dir: str,
    patch_dir: str | None,
    texts: Sequence[str],
    init: str = "exp",
    seq_len: int | None = None,
    batch_tokens: int = 8192,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """bits_per_byte of a model folder, with its own tokenizer or a patch tokenizer.

    The tokenizer: ``patch_dir`` if given, else the folder's patch tokenizer if it
    is a patched folder, else its Hugging Face tokenizer. A base model given with
    a patch tokenizer is patched in memory with ``init`` first. ``seq_len`` None is 768
    tokens, or the model's context if shorter.
    """
    from pathlib import Path

    from adaptivocab.base import load_base_tokenizer
    from adaptivocab.hf_model import load_causal_lm
    from adaptivocab.model_io import fit_seq_len
    from adaptivocab.patch import PATCH_FILE
    from adaptivocab.tokenizer import PatchTokenizer
    from adaptivocab.trainer import resolve_device

    if not (Path(model_dir) / "config.json").is_file():
        # Checked first: the tokenizer, loaded from the same folder, failed before with
        # "tokenizer folder not found", which named the wrong thing.
        raise AdaptiVocabError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    window = fit_seq_len(model_dir, seq_len)
    if patch_dir is not None:
        tokenizer: Any = PatchTokenizer.from_pretrained(patch_dir)
    elif (Path(model_dir) / PATCH_FILE).is_file():
        tokenizer = PatchTokenizer.from_pretrained(model_dir)
    else:
        tokenizer = load_base_tokenizer(model_dir)
    dev = resolve_device(device)
    loaded = load_causal_lm(model_dir, tokenizer, init=init, progress=progress)
    # Moved as an nn.Module: transformers types PreTrainedModel.to as the unbound Module.to.
    model: torch.nn.Module = loaded.model
    model = model.to(dev)
    result = bits_per_byte(
        model,
        tokenizer,
        texts,
        seq_len=window,
        batch_tokens=batch_tokens,
        device=dev,
        progress=progress,
    )
    result.update(
        model=str(model_dir),
        tokenizer="patch" if hasattr(tokenizer, "ngram_pieces") else "base",
        patched_at_load=loaded.patched_here,
    )
    return result
