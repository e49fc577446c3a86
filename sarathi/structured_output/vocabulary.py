"""The tokenizer as the grammar engine sees it: every token id and the bytes it writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import llguidance
import llguidance.hf

from sarathi.transformers_utils.tokenizer import as_patch_tokenizer


def grammar_vocabulary(tokenizer: Any, eos_ids: Iterable[int]) -> llguidance.LLTokenizer:
    """llguidance's view of ``tokenizer``; ``eos_ids`` end a finished grammar.

    A Hugging Face fast tokenizer is read directly. For an AdaptiVocab PatchTokenizer the
    vocabulary is the patched one: surviving ids keep their base bytes, and each n-gram id
    writes the bytes of its pieces one after the other, so the grammar can use the domain
    tokens as single steps."""
    eos = sorted(eos_ids)
    patch = as_patch_tokenizer(tokenizer)
    if patch is None:
        try:
            return llguidance.hf.from_tokenizer(tokenizer, eos_token=eos or None)
        except ValueError as e:
            raise ValueError(
                f"structured outputs need a fast (Rust) Hugging Face tokenizer: {e}"
            ) from e
    base = llguidance.hf.from_tokenizer(patch.base_tokenizer, eos_token=eos or None)
    tokens = [base.decode_bytes([i]) for i in range(len(patch))]
    for tid, pieces in patch.ngram_pieces.items():
        tokens[tid] = b"".join(tokens[p] for p in pieces)
    return llguidance.LLTokenizer(
        llguidance.TokenizerWrapper(_PatchedVocabulary(patch, tokens, eos)),
        eos_token=eos or None,
    )


class _PatchedVocabulary:
    """The object ``llguidance.TokenizerWrapper`` reads: the token bytes, special ids and a
    tokenize function (used for text the grammar forces)."""

    def __init__(self, patch: Any, tokens: list[bytes], eos: list[int]) -> None:
        self._patch = patch
        self.tokens = tokens
        self.eos_token_id = eos[0] if eos else patch.eos_token_id
        self.bos_token_id = patch.bos_token_id
        self.special_token_ids = list(patch.all_special_ids)

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._patch.encode(text, add_special_tokens=False))
