"""Incremental (streaming) detokenization.

Decoding one token at a time is wrong for byte-fallback and byte-level tokenizers (a
character can span tokens) and for SentencePiece (a token's leading space depends on what
precedes it). We decode a short window twice, with and without the newest tokens, and emit
the difference once it no longer ends in an incomplete character.
"""

from __future__ import annotations

from typing import Any

# Prompt tokens kept as left context so the first generated token decodes as it would in
# the middle of the text (SentencePiece strips the space of a text's first token).
_CONTEXT = 4
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int], skip_special_tokens: bool = True
                 ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids = list(prompt_ids[-_CONTEXT:])
        self._prefix = 0
        self._read = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def add(self, token_id: int) -> str:
        """Append one generated token; returns the text that is now final."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith(_REPLACEMENT)):
            delta = new_text[len(prefix_text):]
            self._prefix = self._read
            self._read = len(self._ids)
            return delta
        return ""
