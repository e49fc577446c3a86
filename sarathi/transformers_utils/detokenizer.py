"""Incremental (streaming) detokenization.

Decoding one token at a time is wrong for byte-fallback and byte-level tokenizers (a
character can span tokens) and for SentencePiece (a token's leading space depends on what
precedes it). We decode a short window twice, with and without the newest tokens, and emit
the difference once it no longer ends in an incomplete character: AdaptiVocab's
``IncrementalDecoder`` (exact for base and patch tokenizers alike, property-tested there),
here with the prompt's last tokens as left context and the Rust decoder where it is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adaptivocab.detok import IncrementalDecoder

PROMPT_CONTEXT = 16  # prompt tokens a stream keeps as left context


class _RustDecoder:
    """Decodes with the Rust tokenizer directly: Hugging Face's Python wrapper around it costs
    several times the decode itself, and streaming decodes a few windows per token."""

    def __init__(self, backend: Any) -> None:
        self._decode = backend.decode

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._decode(ids, skip_special_tokens=skip_special_tokens)


def streaming_decoder(tokenizer: Any) -> Any:
    """The cheapest object whose ``decode`` equals ``tokenizer.decode`` (for detokenizers)."""
    from adaptivocab import PatchTokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (
        backend is not None
        and getattr(tokenizer, "is_fast", False)
        and not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        and not isinstance(tokenizer, PatchTokenizer)
    ):
        return _RustDecoder(backend)
    return tokenizer


def incremental_detokenizer(
    decoder: Any, prompt_ids: Sequence[int], skip_special_tokens: bool = True
) -> IncrementalDecoder:
    """A streaming decoder for one sequence's output tokens (``step`` per token or batch,
    ``flush`` at the end). Only the prompt's tail matters as left context."""
    return IncrementalDecoder(decoder, skip_special_tokens, context=prompt_ids[-PROMPT_CONTEXT:])
