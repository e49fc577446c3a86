"""Reduction statistics: how many tokens the patch saves on a text."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptivocab.counting import encode_corpus
from adaptivocab.errors import AdaptiVocabError

# Tiny paragraphs (a heading underline) have meaningless ratios; they still
# count in the totals but not in the per-document spread.
MIN_DOC_TOKENS_FOR_SPREAD = 16


def measure_reduction(
    tokenizer: Any, docs: Sequence[str], source: str = "", progress: bool = True
) -> dict[str, Any]:
    """Token counts of ``docs`` under the base and the patched tokenizer (no special tokens)."""
    if not docs:
        raise AdaptiVocabError("no text to measure; pass a non-empty corpus")
    flat, lengths = encode_corpus(tokenizer._backend, docs, desc="measuring", progress=progress)
    _, patched_len = tokenizer._matcher.apply_flat(flat, lengths)
    base_total = int(lengths.sum())
    patched_total = int(patched_len.sum())
    if base_total == 0:
        raise AdaptiVocabError("the text has no tokens; pass a non-empty corpus")
    big = lengths >= MIN_DOC_TOKENS_FOR_SPREAD
    per_doc = patched_len[big] / lengths[big]
    chars = sum(len(d) for d in docs)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    return {
        "source": source,
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "documents": len(docs),
        "characters": chars,
        "bytes": nbytes,
        "base_tokens": base_total,
        "patched_tokens": patched_total,
        "ratio": patched_total / base_total,
        "reduction": 1.0 - patched_total / base_total,
        "chars_per_base_token": chars / base_total,
        "chars_per_patched_token": chars / max(patched_total, 1),
        "per_document": _spread(per_doc),
    }


def _spread(per_doc: np.ndarray) -> dict[str, Any]:
    """The ratio's spread over the documents long enough to have one; its statistics are
    None where none is."""
    spread: dict[str, Any] = {
        "min_base_tokens": MIN_DOC_TOKENS_FOR_SPREAD,
        "documents": int(per_doc.size),
    }
    stats = ("mean", "std", "p10", "p50", "p90")
    if not per_doc.size:
        return spread | dict.fromkeys(stats)
    values = (per_doc.mean(), per_doc.std(), *np.percentile(per_doc, [10, 50, 90]))
    return spread | {k: float(v) for k, v in zip(stats, values, strict=True)}


def format_stats(stats: dict[str, Any]) -> str:
    """A small aligned table for the terminal."""
    spread = stats["per_document"]
    rows = [
        ("documents", f"{stats['documents']:,}"),
        ("characters", f"{stats['characters']:,}"),
        ("bytes", f"{stats['bytes']:,}"),
        ("base tokens", f"{stats['base_tokens']:,}"),
        ("patched tokens", f"{stats['patched_tokens']:,}"),
        ("ratio (patched/base)", f"{stats['ratio']:.4f}"),
        ("reduction", f"{100 * stats['reduction']:.2f}%"),
        (
            f"per-doc ratio (>= {spread['min_base_tokens']} tokens)",
            f"mean {spread['mean']:.3f} std {spread['std']:.3f} p10 {spread['p10']:.3f} "
            f"p50 {spread['p50']:.3f} p90 {spread['p90']:.3f}"
            if spread["documents"]
            else "n/a: no document is that long",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
