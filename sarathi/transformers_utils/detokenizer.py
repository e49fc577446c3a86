"""Incremental (streaming) detokenization.

Decoding one token at a time is wrong for byte-fallback and byte-level tokenizers (a
character can span tokens) and for SentencePiece (a token's leading space depends on what
precedes it). We decode a short window twice, with and without the newest tokens, and emit
the difference once it no longer ends in an incomplete character. The window logic is
AdaptiVocab's (exact for base and patch tokenizers alike, property-tested there).
"""

from __future__ import annotations

from typing import Any

from adaptivocab.detok import advance_window, initial_offsets


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


class IncrementalDetokenizer:
    def __init__(
        self, tokenizer: Any, prompt_ids: list[int], skip_special_tokens: bool = True
    ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        # Only the prompt's tail matters as left context.
        tail = list(prompt_ids[-16:])
        self._prefix, self._read = initial_offsets(tokenizer, tail, skip_special_tokens)
        self._ids = tail
        self._window: str | None = None  # the text of _ids[_prefix:_read], once known

    def add(self, token_id: int) -> str:
        """Append one generated token; returns the text that is now final."""
        self._ids.append(token_id)
        return self._advance()

    def add_many(self, token_ids: list[int]) -> str:
        """Append several generated tokens at once: the same text as adding them one by
        one, with a few window decodes in all instead of a few per token."""
        if not token_ids:
            return ""
        self._ids.extend(token_ids)
        return self._advance()

    def _advance(self) -> str:
        delta, self._prefix, self._read, self._window = advance_window(
            self._tok, self._ids, self._prefix, self._read, self._skip, self._window
        )
        return delta

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end)."""
        if self._read == len(self._ids):
            return ""
        new = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=self._skip)
        old = self._window
        if old is None:
            old = self._tok.decode(
                self._ids[self._prefix : self._read], skip_special_tokens=self._skip
            )
        self._read = len(self._ids)
        self._window = None  # the window is [_prefix, _read) again: its text is unknown
        return new[len(old) :] if new.startswith(old) else ""
