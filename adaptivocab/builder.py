"""Choosing tokens to remove and n-grams to add (AdaptiVocab's vocabulary swap)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from adaptivocab.base import BaseInfo, inspect_base, vocab_fingerprint
from adaptivocab.counting import count_ngrams, encode_corpus, key_bits, unpack
from adaptivocab.errors import AdaptiVocabError
from adaptivocab.matcher import NgramMatcher
from adaptivocab.patch import VocabPatch

SCORES = ("freq_len_minus_1", "freq_len")
# Chosen after measuring both on held-out text (see benchmarks/results/adaptivocab-*.md).
DEFAULT_SCORE = "freq_len_minus_1"
MIN_TRAIN_TOKENS = 1000
# Share of the n-grams picked in each rescoring round: small rounds first,
# where the most frequent (and most overlapping) candidates compete.
_ROUND_SHARES = (0.02, 0.04, 0.06, 0.08, 0.10, 0.14, 0.18, 0.18, 0.20)


@dataclass(frozen=True)
class BuildConfig:
    num_tokens: int = 10000
    max_ngram: int = 3
    score: str = DEFAULT_SCORE
    progress: bool = True


@dataclass
class BuildReport:
    train_docs: int = 0
    train_tokens: int = 0
    seconds: float = 0.0
    rounds: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def removal_order(info: BaseInfo, counts: np.ndarray) -> list[int]:
    """Eligible tokens, least useful first: unseen, then rarest; later merges first on ties."""
    eligible = [i for i in range(info.vocab_size) if i not in info.protected and i in info.merges]
    eligible.sort(key=lambda i: (int(counts[i]), -i))
    return eligible


def _conflicts(
    g: tuple[int, ...],
    accepted: set[tuple[int, ...]],
    heads: set[tuple[int, ...]],
    tails: set[tuple[int, ...]],
    inner: set[tuple[int, ...]],
) -> bool:
    """Could an occurrence of ``g`` overlap one of an n-gram accepted this round?"""
    n = len(g)
    if g in inner:
        return True
    for k in range(1, n):
        if g[n - k :] in heads or g[:k] in tails:
            return True
    for a in range(n):
        for b in range(a + 2, n + 1):
            if (a, b) != (0, n) and g[a:b] in accepted:
                return True
    return False


def _register(
    g: tuple[int, ...],
    accepted: set[tuple[int, ...]],
    heads: set[tuple[int, ...]],
    tails: set[tuple[int, ...]],
    inner: set[tuple[int, ...]],
) -> None:
    n = len(g)
    accepted.add(g)
    for k in range(1, n):
        heads.add(g[:k])
        tails.add(g[n - k :])
    for a in range(n):
        for b in range(a + 1, n + 1):
            inner.add(g[a:b])


def select_ngrams(
    arr: np.ndarray,
    mergeable: np.ndarray,
    vocab_size: int,
    num: int,
    max_ngram: int,
    score: str,
    progress: bool = True,
) -> tuple[list[tuple[int, ...]], int]:
    """Greedy selection in rounds with overlap-aware rescoring.

    Each round re-segments the text with the n-grams chosen so far (the real
    encoder), so positions inside chosen n-grams no longer count for any
    other candidate, then recounts. Within a round only candidates whose
    occurrences cannot overlap are taken, so their counts stay exact.
    """
    if score not in SCORES:
        raise AdaptiVocabError(f"unknown --score {score!r}; choose one of {', '.join(SCORES)}")
    bits = key_bits(vocab_size, max_ngram)
    chosen: list[tuple[int, ...]] = []
    chosen_set: set[tuple[int, ...]] = set()
    bar = tqdm(total=num, desc="selecting n-grams", unit="ngram", disable=not progress, leave=False)
    rounds = 0
    share_idx = 0
    while len(chosen) < num:
        rounds += 1
        if chosen:
            matcher = NgramMatcher(
                vocab_size, {}, {vocab_size + i: g for i, g in enumerate(chosen)}
            )
            # The matcher only needs ids to be distinct; new ids above the vocab are fine here.
            on, match_len, _ = matcher.resolve(arr)
            covered = np.zeros(arr.size + 1, dtype=np.int64)
            starts = np.flatnonzero(on & (match_len > 1))
            np.add.at(covered, starts, 1)
            np.add.at(covered, starts + match_len[starts], -1)
            free = mergeable & (np.cumsum(covered)[:-1] == 0)
        else:
            free = mergeable
        cand_keys, cand_n, cand_score = [], [], []
        for n in range(2, max_ngram + 1):
            keys, counts = count_ngrams(arr, free, n, bits)
            ok = counts >= 2
            keys, counts = keys[ok], counts[ok]
            weight = n - 1 if score == "freq_len_minus_1" else n
            cand_keys.append(keys)
            cand_n.append(np.full(keys.size, n, dtype=np.int64))
            cand_score.append(counts * weight)
        keys_all = np.concatenate(cand_keys)
        n_all = np.concatenate(cand_n)
        score_all = np.concatenate(cand_score)
        if keys_all.size == 0:
            break
        remaining = num - len(chosen)
        share = _ROUND_SHARES[min(share_idx, len(_ROUND_SHARES) - 1)]
        share_idx += 1
        quota = min(remaining, max(1, math.ceil(share * num)))
        # Ties broken by longer n-gram, then key, so builds are reproducible.
        order = np.lexsort((keys_all, -n_all, -score_all))
        accepted: set[tuple[int, ...]] = set()
        heads: set[tuple[int, ...]] = set()
        tails: set[tuple[int, ...]] = set()
        inner: set[tuple[int, ...]] = set()
        taken = 0
        for idx in order.tolist():
            if taken >= quota:
                break
            g = unpack(int(keys_all[idx]), int(n_all[idx]), bits)
            if g in chosen_set or _conflicts(g, accepted, heads, tails, inner):
                continue
            _register(g, accepted, heads, tails, inner)
            chosen.append(g)
            chosen_set.add(g)
            taken += 1
        bar.update(taken)
        if taken == 0:
            break
    bar.close()
    return chosen, rounds


def build_patch(
    tokenizer: Any, docs: Sequence[str], config: BuildConfig
) -> tuple[VocabPatch, BuildReport]:
    """Build the vocabulary patch of ``tokenizer`` for the domain text ``docs``."""
    t0 = time.perf_counter()
    if config.num_tokens < 1:
        raise AdaptiVocabError("--num-tokens must be at least 1")
    if config.max_ngram < 2:
        raise AdaptiVocabError(
            "--max-ngram must be at least 2 (n-grams are runs of 2..n base tokens)"
        )
    info = inspect_base(tokenizer, str(getattr(tokenizer, "name_or_path", "tokenizer")))
    key_bits(info.vocab_size, config.max_ngram)
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    flat, lengths = encode_corpus(backend, docs, progress=config.progress)
    if flat.size < MIN_TRAIN_TOKENS:
        raise AdaptiVocabError(
            f"the corpus is too small ({flat.size} base tokens for counting; at least "
            f"{MIN_TRAIN_TOKENS} needed, millions recommended); pass more domain text"
        )
    counts = np.bincount(flat, minlength=info.vocab_size)
    order = removal_order(info, counts)
    if len(order) < config.num_tokens:
        raise AdaptiVocabError(
            f"only {len(order)} tokens of this tokenizer can be removed (not special, byte or "
            f"single-character); lower --num-tokens to at most {len(order)}"
        )
    removed_ids = order[: config.num_tokens]
    removed_set = frozenset(removed_ids)
    removed = {}
    for rid in removed_ids:
        pieces = info.decompose(rid, removed_set)
        if pieces is None:  # eligibility guarantees a merge
            raise AdaptiVocabError(f"internal: token {rid} cannot be decomposed")
        removed[rid] = pieces
    splitter = NgramMatcher(info.vocab_size, removed, {})
    split, split_len = splitter.split_flat(flat, lengths)
    arr = splitter.pad(split, split_len)
    mergeable = arr < info.vocab_size
    protected = np.zeros(info.vocab_size + 1, dtype=bool)
    for sid in getattr(tokenizer, "all_special_ids", []):
        protected[sid] = True
    for added in tokenizer.backend_tokenizer.get_added_tokens_decoder():
        if added < info.vocab_size:
            protected[added] = True
    protected[info.vocab_size] = True
    mergeable &= ~protected[arr]
    chosen, rounds = select_ngrams(
        arr,
        mergeable,
        info.vocab_size,
        config.num_tokens,
        config.max_ngram,
        config.score,
        config.progress,
    )
    if len(chosen) < config.num_tokens:
        raise AdaptiVocabError(
            f"the corpus yields only {len(chosen)} n-grams seen at least twice with "
            f"{config.num_tokens} tokens swapped; lower --num-tokens below {len(chosen)} (fewer "
            "swaps split the text differently, so the count moves) or pass more domain text"
        )
    ngrams = dict(zip(removed_ids, chosen, strict=True))
    report = BuildReport(
        train_docs=len(docs),
        train_tokens=int(flat.size),
        seconds=time.perf_counter() - t0,
        rounds=rounds,
    )
    patch = VocabPatch(
        base_vocab_size=info.vocab_size,
        kind=info.kind.value,
        removed=removed,
        ngrams=ngrams,
        base_fingerprint=vocab_fingerprint(tokenizer),
        build={
            "num_tokens": config.num_tokens,
            "max_ngram": config.max_ngram,
            "score": config.score,
            "train_docs": report.train_docs,
            "train_tokens": report.train_tokens,
            "rounds": rounds,
        },
    )
    patch.validate()
    return patch, report
