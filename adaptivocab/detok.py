"""Exact incremental (streaming) detokenization by decoding short windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_REPLACEMENT = "\ufffd"


def detokenize_incrementally(
    tokenizer: Any,
    all_ids: Sequence[int],
    prefix_offset: int,
    read_offset: int,
    skip_special_tokens: bool = False,
) -> tuple[str, int, int]:
    """One step of the windowed algorithm; returns ``(delta, prefix_offset, read_offset)``.

    ``decode(ids[prefix:])`` and ``decode(ids[prefix:read])`` start at the same
    token, so start-of-text effects (SentencePiece's stripped leading space,
    bytes split across tokens) cancel out. Nothing is emitted while the window
    ends in an incomplete character (U+FFFD). Works for any tokenizer whose
    decode of a slice equals the decode of the corresponding base slice, which
    PatchTokenizer guarantees.
    """
    delta, prefix, read, _ = advance_window(
        tokenizer, all_ids, prefix_offset, read_offset, skip_special_tokens
    )
    return delta, prefix, read


def advance_window(
    tokenizer: Any,
    all_ids: Sequence[int],
    prefix_offset: int,
    read_offset: int,
    skip_special_tokens: bool = False,
    old: str | None = None,
) -> tuple[str, int, int, str | None]:
    """``detokenize_incrementally`` that also takes and returns the text of the window
    ``[prefix_offset, read_offset)`` (None: not known). A streaming caller that keeps it
    decodes twice per token instead of three times: the window the next step starts from
    is one this step decodes anyway."""
    new = tokenizer.decode(all_ids[prefix_offset:], skip_special_tokens=skip_special_tokens)
    if not new or new.endswith(_REPLACEMENT):
        return "", prefix_offset, read_offset, old
    if old is None:
        old = tokenizer.decode(
            all_ids[prefix_offset:read_offset], skip_special_tokens=skip_special_tokens
        )
    if not new.startswith(old) and len(new) <= len(old):
        return "", prefix_offset, read_offset, old
    # The new tokens may have changed the window's text, not only extended it: byte
    # fallback decodes a run of bytes that is not valid UTF-8 as one U+FFFD per byte, so a
    # stray byte turns an emitted character (or a prompt's) into U+FFFDs. That text cannot
    # be taken back, and the window keeps the tokens that changed it, so waiting for it to
    # come back lost the rest of the output; emit past its length instead (vLLM's rule).
    next_prefix, next_old = _next_window(
        tokenizer, all_ids, prefix_offset, read_offset, skip_special_tokens, new
    )
    return new[len(old) :], next_prefix, len(all_ids), next_old


def _next_window(
    tokenizer: Any,
    all_ids: Sequence[int],
    prefix_offset: int,
    read_offset: int,
    skip: bool,
    text: str,
) -> tuple[int, str]:
    """Where the next window starts, and its text so far (``text``: that of
    ``all_ids[prefix_offset:]``): at the old read offset, unless that window decodes to "".

    A window whose text so far is empty (a lone SentencePiece space, or only
    skipped special tokens) would let the decoder's strip-leading-space rule
    eat a real space of the *next* tokens; keeping the longer window avoids it.
    """
    if read_offset != prefix_offset:
        tail = tokenizer.decode(all_ids[read_offset:], skip_special_tokens=skip)
        if tail:
            return read_offset, tail
    return prefix_offset, text


def initial_offsets(
    tokenizer: Any, prompt_ids: Sequence[int], skip_special_tokens: bool = False, window: int = 5
) -> tuple[int, int]:
    """``(prefix_offset, read_offset)`` to start streaming after a prompt.

    The window covers the last few prompt tokens and grows backwards until it
    decodes to non-empty text (see ``_next_window``); ``(0, 0)`` streams from the start.
    """
    read = len(prompt_ids)
    prefix = max(read - window, 0)
    while prefix > 0 and not tokenizer.decode(
        prompt_ids[prefix:read], skip_special_tokens=skip_special_tokens
    ):
        prefix -= 1
    return prefix, read


class IncrementalDecoder:
    """Stateful streaming decoder: ``step(new_ids)`` returns the new text, ``flush()`` the rest.

    The concatenation of every ``step`` result and the final ``flush`` equals
    ``tokenizer.decode(all_ids)``, but where a later token changes text already emitted (a
    stray byte after a multi-byte character): that text stays, and the rest follows it by
    length. ``context``: ids that come before the stream (a prompt's
    last tokens): they shape how its first tokens decode (a SentencePiece leading space, a
    character split across the boundary) and their own text is never emitted; the
    concatenation then equals the stream's part of ``decode(context + all_ids)``.
    """

    def __init__(
        self, tokenizer: Any, skip_special_tokens: bool = False, context: Sequence[int] = ()
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = [int(i) for i in context]
        self.prefix_offset, self.read_offset = initial_offsets(
            tokenizer, self.ids, skip_special_tokens
        )
        # The text of ids[prefix_offset:read_offset] (None: not decoded yet).
        self._window_text: str | None = "" if self.read_offset == self.prefix_offset else None

    def step(self, new_ids: Sequence[int] | int) -> str:
        if isinstance(new_ids, int):
            self.ids.append(new_ids)
        else:
            self.ids.extend(int(i) for i in new_ids)
        if self.read_offset == len(self.ids):
            return ""
        delta, self.prefix_offset, self.read_offset, self._window_text = advance_window(
            self.tokenizer,
            self.ids,
            self.prefix_offset,
            self.read_offset,
            self.skip_special_tokens,
            self._window_text,
        )
        return delta

    def flush(self) -> str:
        """Emit what was held back (e.g. a real U+FFFD at the end of the text)."""
        if self.read_offset == len(self.ids):
            return ""
        new = self.tokenizer.decode(
            self.ids[self.prefix_offset :], skip_special_tokens=self.skip_special_tokens
        )
        old = self._window_text
        if old is None:
            old = self.tokenizer.decode(
                self.ids[self.prefix_offset : self.read_offset],
                skip_special_tokens=self.skip_special_tokens,
            )
        self.prefix_offset, self._window_text = _next_window(
            self.tokenizer,
            self.ids,
            self.prefix_offset,
            self.read_offset,
            self.skip_special_tokens,
            new,
        )
        self.read_offset = len(self.ids)
        # A window whose text changed under the new tokens: past its old length, as in
        # ``advance_window`` (what was emitted, or the prompt's text, is never re-emitted).
        return new[len(old) :]
