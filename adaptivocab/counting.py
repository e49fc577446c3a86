"""Counting base-token n-grams with numpy (keys packed into int64, then np.unique)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from adaptivocab.errors import AdaptiVocabError


def encode_corpus(
    backend: object,
    docs: Sequence[str],
    desc: str = "encoding",
    progress: bool = True,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Base ids of every document (no special tokens), concatenated, plus per-document lengths."""
    flats: list[np.ndarray] = []
    lengths: list[int] = []
    bar = tqdm(total=len(docs), desc=desc, unit="doc", disable=not progress, leave=False)
    for start in range(0, len(docs), chunk):
        part = list(docs[start : start + chunk])
        encs = backend.encode_batch_fast(part, add_special_tokens=False)  # type: ignore[attr-defined]
        for e in encs:
            ids = e.ids
            lengths.append(len(ids))
            flats.append(np.asarray(ids, dtype=np.int64))
        bar.update(len(part))
    bar.close()
    flat = np.concatenate(flats) if flats else np.zeros(0, dtype=np.int64)
    return flat, np.asarray(lengths, dtype=np.int64)


def key_bits(vocab_size: int, max_ngram: int) -> int:
    bits = int(vocab_size).bit_length()
    if bits * max_ngram > 62:
        raise AdaptiVocabError(
            f"--max-ngram {max_ngram} is too large for a vocab of {vocab_size} tokens "
            f"(at most {62 // bits}); lower --max-ngram"
        )
    return bits


def count_ngrams(
    arr: np.ndarray, free: np.ndarray, n: int, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct packed keys of n-grams made only of free positions, and their counts."""
    size = arr.size - n + 1
    if size <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ok = free[:size].copy()
    key = arr[:size].copy()
    for j in range(1, n):
        ok &= free[j : j + size]
        key = (key << bits) | arr[j : j + size]
    keys, counts = np.unique(key[ok], return_counts=True)
    return keys, counts.astype(np.int64)


def unpack(key: int, n: int, bits: int) -> tuple[int, ...]:
    mask = (1 << bits) - 1
    return tuple((key >> (bits * (n - 1 - j))) & mask for j in range(n))
