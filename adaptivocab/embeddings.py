"""Initialising the embedding and LM-head rows of swapped ids from their pieces."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from adaptivocab.errors import AdaptiVocabError

INIT_METHODS = ("exp", "mean", "first", "last", "random")
DEFAULT_EXP_BASE = math.e
# Models often pad their embedding past len(tokenizer) (Qwen: 151,936 rows for
# 151,665 tokens); more slack than this means a different tokenizer.
_MAX_PAD_FRACTION = 0.02


def _pieces_of(patch: Any) -> dict[int, tuple[int, ...]]:
    if hasattr(patch, "ngram_pieces"):
        return dict(patch.ngram_pieces)
    if hasattr(patch, "ngrams"):
        return dict(patch.ngrams)
    return {int(k): tuple(int(x) for x in v) for k, v in dict(patch).items()}


def piece_weights(n: int, init: str, side: str, exp_base: float = DEFAULT_EXP_BASE) -> list[float]:
    """Weights of an n-gram's pieces (sum 1) for the ``input`` or ``output`` matrix.

    ``exp``: input rows weight later pieces more (``base**i``), because the
    model's state after reading an n-gram resembles the state after its last
    piece; LM-head rows weight the first piece more (``base**(n-1-i)``),
    because predicting the n-gram starts with predicting its first piece.
    """
    if init not in INIT_METHODS or init == "random":
        raise AdaptiVocabError(f"no piece weights for init {init!r}")
    if init == "mean":
        return [1.0 / n] * n
    if init == "first":
        return [1.0] + [0.0] * (n - 1)
    if init == "last":
        return [0.0] * (n - 1) + [1.0]
    if not (math.isfinite(exp_base) and exp_base > 0):
        raise AdaptiVocabError(f"--exp-base must be a positive finite number, got {exp_base}")
    # base**(i - (n-1)) instead of base**i: the same weights after normalising, but a large
    # base cannot overflow (the largest term is 1).
    log_base = math.log(exp_base)
    raw = (
        [math.exp((i - (n - 1)) * log_base) for i in range(n)]
        if side == "input"
        else [math.exp(-i * log_base) for i in range(n)]
    )
    total = sum(raw)
    return [w / total for w in raw]


def check_vocab(num_rows: int, tokenizer_len: int, what: str = "model") -> None:
    """A patch tokenizer must belong to the model: rows cover every id, padding stays small."""
    if num_rows < tokenizer_len or num_rows > tokenizer_len * (1 + _MAX_PAD_FRACTION) + 64:
        raise AdaptiVocabError(
            f"vocab size mismatch: the {what} has {num_rows} embedding rows but the patch "
            f"tokenizer has {tokenizer_len} tokens; build the patch from this model's own tokenizer"
        )


def check_model_tokenizer(model_dir: str | os.PathLike[str], base_tokenizer: Any) -> None:
    """A base model folder's own tokenizer.json must be the one a patch tokenizer was built
    from (``base_tokenizer``, the patch tokenizer's base: a fast Hugging Face tokenizer): its
    rows mean that tokenizer's tokens, and the swapped rows are initialised from the rows of
    the pieces. check_vocab compares sizes only, so a patch from another tokenizer of about
    the same size would give every id the wrong row. Compared by the BPE vocabulary (token ->
    id), not the added tokens, which base and instruct folders may name differently. A
    folder without a readable tokenizer.json is not checked (nothing to compare; the weights
    were made for some tokenizer the user vouches for)."""
    own = Path(model_dir) / "tokenizer.json"
    if not own.is_file():
        return
    try:
        model_vocab = json.loads(own.read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return
    patch_vocab = json.loads(base_tokenizer.backend_tokenizer.to_str())["model"]["vocab"]
    if model_vocab == patch_vocab:
        return
    if isinstance(model_vocab, dict):
        differ = sum(model_vocab.get(t) != i for t, i in patch_vocab.items())
        how = f"{differ} of its {len(patch_vocab)} tokens have other ids there"
    else:
        how = "that one is not a BPE vocabulary"
    raise AdaptiVocabError(
        f"the patch tokenizer was built from a different tokenizer than {own} ({how}); "
        "build the patch from this model's own tokenizer"
    )


def _new_rows(
    matrix: torch.Tensor,
    pieces: Mapping[int, tuple[int, ...]],
    init: str,
    side: str,
    exp_base: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = sorted(pieces)
    index = torch.tensor(ids, dtype=torch.long)
    if init == "random":
        gen = torch.Generator().manual_seed(seed)
        ref = matrix.float()
        rows = torch.randn(len(ids), matrix.shape[1], generator=gen) * ref.std() + ref.mean()
        return index, rows.to(matrix.dtype)
    width = max(len(p) for p in pieces.values())
    piece_idx = torch.zeros(len(ids), width, dtype=torch.long)
    weights = torch.zeros(len(ids), width, dtype=torch.float32)
    cache: dict[int, list[float]] = {}
    for r, tid in enumerate(ids):
        p = pieces[tid]
        w = cache.setdefault(len(p), piece_weights(len(p), init, side, exp_base))
        piece_idx[r, : len(p)] = torch.tensor(p, dtype=torch.long)
        weights[r, : len(p)] = torch.tensor(w)
    gathered = matrix[piece_idx.reshape(-1)].float().reshape(len(ids), width, -1)
    rows = (gathered * weights.unsqueeze(-1)).sum(dim=1)
    return index, rows.to(matrix.dtype)


def patch_embeddings(
    embed: torch.Tensor,
    lm_head: torch.Tensor | None,
    patch: Any,
    init: str = "exp",
    exp_base: float = DEFAULT_EXP_BASE,
    seed: int = 0,
    tied: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New (embed, lm_head) with only the swapped rows replaced; inputs are not modified.

    ``patch`` is a PatchTokenizer, a VocabPatch or a mapping id -> base piece ids.
    Tied models (``lm_head`` None, the same tensor, or ``tied=True``) have one
    matrix; it gets the *input* rule, because every generated token is fed back
    as input while the n-gram's pieces remain generatable on the output side.
    The returned lm_head is then the same tensor as the returned embed.
    """
    if init not in INIT_METHODS:
        raise AdaptiVocabError(f"unknown init {init!r}; choose one of {', '.join(INIT_METHODS)}")
    pieces = _pieces_of(patch)
    if embed.dim() != 2:
        raise AdaptiVocabError(f"embedding must be a 2-D matrix, got shape {tuple(embed.shape)}")
    if tied is None:
        tied = (
            lm_head is None
            or lm_head is embed
            or (lm_head.shape == embed.shape and lm_head.data_ptr() == embed.data_ptr())
        )
    if lm_head is not None and lm_head.shape != embed.shape:
        raise AdaptiVocabError(
            f"LM head shape {tuple(lm_head.shape)} differs from embedding shape "
            f"{tuple(embed.shape)}"
        )
    top = max((max(p) for p in pieces.values()), default=-1)
    top = max(top, max(pieces, default=-1))
    if top >= embed.shape[0]:
        raise AdaptiVocabError(
            f"patch uses id {top} but the embedding has only {embed.shape[0]} rows; vocab size "
            "mismatch"
        )
    with torch.no_grad():
        new_embed = embed.detach().clone()
        if pieces:
            index, rows = _new_rows(embed.detach(), pieces, init, "input", exp_base, seed)
            new_embed[index] = rows
        if tied:
            return new_embed, (new_embed if lm_head is not None else None)
        assert lm_head is not None
        new_head = lm_head.detach().clone()
        if pieces:
            index, rows = _new_rows(lm_head.detach(), pieces, init, "output", exp_base, seed + 1)
            new_head[index] = rows
    return new_embed, new_head


EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
HEAD_NAMES = ("lm_head.weight", "embed_out.weight")


def find_embedding_names(names: Sequence[str]) -> tuple[str, str | None]:
    """(embedding key, LM-head key or None) among a checkpoint's tensor names."""
    embed = [n for n in names if n.endswith(EMBED_SUFFIXES)]
    if len(embed) != 1:
        raise AdaptiVocabError(
            "cannot find exactly one input embedding tensor (looked for "
            f"*{', *'.join(EMBED_SUFFIXES)}; found {embed})"
        )
    head = [n for n in names if n in HEAD_NAMES or n.endswith(".lm_head.weight")]
    if len(head) > 1:
        raise AdaptiVocabError(f"several LM-head tensors found: {head}")
    return embed[0], (head[0] if head else None)


def patch_state_dict_rows(
    tensors: Mapping[str, torch.Tensor],
    patch: Any,
    init: str = "exp",
    exp_base: float = DEFAULT_EXP_BASE,
    seed: int = 0,
    tie_word_embeddings: bool = False,
) -> dict[str, torch.Tensor]:
    """A new name->tensor dict with the embedding and LM-head rows patched; others shared.

    For an engine patching at load time. Tied when ``tie_word_embeddings`` or
    the LM head is absent; a present LM head of a tied model gets the same rows.
    """
    out = dict(tensors)
    embed_key, head_key = find_embedding_names(list(tensors))
    embed = tensors[embed_key]
    if hasattr(patch, "__len__") and hasattr(patch, "ngram_pieces"):
        check_vocab(embed.shape[0], len(patch))
    tied = tie_word_embeddings or head_key is None
    new_embed, new_head = patch_embeddings(
        embed,
        None if head_key is None else tensors[head_key],
        patch,
        init,
        exp_base,
        seed,
        tied=tied,
    )
    out[embed_key] = new_embed
    if head_key is not None:
        assert new_head is not None  # a head was passed in, so one comes back
        out[head_key] = new_head.clone() if tied else new_head
    return out
