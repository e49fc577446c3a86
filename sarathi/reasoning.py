"""Reasoning parsers: where a thinking model's reasoning ends and its answer begins.

Thinking models (DeepSeek-R1 and its distills, Qwen3) write their reasoning between
``<think>`` and ``</think>``, then the answer. A parser (vLLM's ``--reasoning-parser``)
splits an output into the two, on the tags' token ids:

- reasoning runs from the start of the output to the first ``</think>`` token; a
  ``<think>`` the model writes itself is dropped, and so is none the chat template wrote
  into the prompt (R1's template and newer Qwen3 ones end the prompt with ``<think>``);
- with no ``</think>`` (cut by ``max_tokens``) the whole output is reasoning;
- a prompt whose last tag is ``</think>`` (Qwen3's template with ``enable_thinking:
  false`` writes an empty ``<think></think>``) has ended reasoning: the output is all answer;
- ``qwen3`` also reads ``chat_template_kwargs.enable_thinking: false`` as no reasoning,
  whatever the template wrote.

The split is the same whether the output arrives whole or as a stream of deltas cut
anywhere (``ReasoningStream``). The engine reads the same rule for structured outputs:
a grammar constrains only what follows the reasoning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

START_TAG = "<think>"
END_TAG = "</think>"


@dataclass(frozen=True)
class ReasoningTags:
    """The tags' texts and token ids, and whether the tokenizer counts them as special
    tokens (then a request that skips special tokens has no tags in its text)."""

    start: str
    end: str
    start_id: int
    end_id: int
    special: bool

    def prompt_ends_reasoning(self, prompt_ids: Sequence[int]) -> bool:
        """Whether the prompt's last tag is the end tag: the template closed the reasoning."""
        for token in reversed(prompt_ids):
            if token == self.end_id:
                return True
            if token == self.start_id:
                return False
        return False


@dataclass
class ReasoningSplit:
    """A piece of output, split: its reasoning text, its answer text, and whether the answer
    has begun (once true, every later piece is answer)."""

    reasoning: str
    content: str
    answering: bool


@dataclass
class ReasoningStream:
    """One output's split, fed in pieces (a stream's deltas, or the whole output at once):
    ``feed`` each piece of text with the token ids it added; the last with ``final``."""

    tags: ReasoningTags
    # False: the output is all answer (the prompt ended reasoning, or thinking is off).
    thinking: bool
    # Whether the tags appear in the output's text (not when skipped special tokens).
    tags_in_text: bool = True
    reasoning_tokens: int = 0
    _ids_thinking: bool = field(init=False)
    _start_seen: bool = field(default=False, init=False)  # among the ids
    _start_dropped: bool = field(default=False, init=False)  # from the text
    _end_seen: bool = field(default=False, init=False)
    _held: str = field(default="", init=False)  # text that may hold a tag not yet whole

    def __post_init__(self) -> None:
        self._ids_thinking = self.thinking

    def feed(self, text: str, ids: Sequence[int], final: bool = False) -> ReasoningSplit:
        self._count(ids)
        if not self.thinking:
            return ReasoningSplit("", text, True)
        if not self.tags_in_text:
            # The tags were skipped from the text: the boundary is the piece that holds the
            # end tag's token, which is reasoning; later pieces are answer.
            if self._end_seen:
                self.thinking = False
                return ReasoningSplit(text, "", True)
            return ReasoningSplit(text, "", False)
        buf = self._held + text
        self._held = ""
        if self._start_seen and not self._start_dropped:
            at = buf.find(self.tags.start)
            if at >= 0:
                buf = buf[:at] + buf[at + len(self.tags.start) :]
                self._start_dropped = True
        if self._end_seen:
            at = buf.find(self.tags.end)
            if at >= 0:
                self.thinking = False
                return ReasoningSplit(buf[:at], buf[at + len(self.tags.end) :], True)
        if final:
            return ReasoningSplit(buf, "", False)
        # The text may lag its tokens (stop strings are held back): keep what could be the
        # beginning of a tag whose token came, until the rest of its text does.
        keep = 0
        for tag, waiting in (
            (self.tags.start, self._start_seen and not self._start_dropped),
            (self.tags.end, self._end_seen),
        ):
            if waiting:
                keep = max(keep, _partial_suffix(buf, tag))
        self._held = buf[len(buf) - keep :] if keep else ""
        return ReasoningSplit(buf[: len(buf) - keep], "", False)

    def feed_whole(
        self, text: str, ids: Sequence[int], decode: Callable[[Sequence[int]], str] | None = None
    ) -> ReasoningSplit:
        """A whole output at once (``final``). Where the tags are not in the text, the
        split falls where a stream's does, at the end tag's token: ``decode`` (the text of
        token ids, special tokens skipped) tells how much of the text is the reasoning's;
        without it the whole output is one piece, all reasoning."""
        end = self.tags.end_id
        if self.thinking and not self.tags_in_text and decode is not None and end in ids:
            k = list(ids).index(end) + 1
            head = decode(ids[:k])
            # A stop string that cut the text within the reasoning: one piece, as streamed.
            if text.startswith(head):
                first = self.feed(head, ids[:k])
                rest = self.feed(text[len(head) :], ids[k:], final=True)
                return ReasoningSplit(
                    first.reasoning + rest.reasoning, first.content + rest.content, True
                )
        return self.feed(text, ids, final=True)

    def _count(self, ids: Sequence[int]) -> None:
        tags = self.tags
        for token in ids:
            if not self._ids_thinking:
                return
            if token == tags.end_id:
                self._end_seen = True
                self._ids_thinking = False
            elif token == tags.start_id and not self._start_seen:
                self._start_seen = True
            else:
                self.reasoning_tokens += 1


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass(frozen=True)
class SplitOutput:
    """A whole output, split: ``reasoning`` is None where the output had no reasoning
    part (it was all answer from the start); ``content`` is None when empty; ``answered``:
    the reasoning ended (false when the output was cut before ``</think>``)."""

    reasoning: str | None
    content: str | None
    reasoning_tokens: int
    answered: bool


class ReasoningParser(Protocol):
    """A reasoning format: its tags, and whether a request's output begins in reasoning."""

    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> ReasoningTags: ...

    def thinking(
        self, prompt_ids: Sequence[int], template_kwargs: Mapping[str, Any] | None
    ) -> bool: ...


@dataclass(frozen=True)
class DeepSeekR1Parser:
    """DeepSeek-R1 and its distills: the output reasons until ``</think>`` unless the
    prompt already closed the reasoning."""

    tags: ReasoningTags
    name: str = "deepseek_r1"

    def thinking(
        self, prompt_ids: Sequence[int], template_kwargs: Mapping[str, Any] | None
    ) -> bool:
        return not self.tags.prompt_ends_reasoning(prompt_ids)


@dataclass(frozen=True)
class Qwen3Parser:
    """Qwen3: as DeepSeek-R1's, and ``enable_thinking: false`` (the template's switch)
    means the output is all answer."""

    tags: ReasoningTags
    name: str = "qwen3"

    def thinking(
        self, prompt_ids: Sequence[int], template_kwargs: Mapping[str, Any] | None
    ) -> bool:
        if template_kwargs and template_kwargs.get("enable_thinking") is False:
            return False
        return not self.tags.prompt_ends_reasoning(prompt_ids)


_PARSERS: dict[str, type[DeepSeekR1Parser] | type[Qwen3Parser]] = {
    "deepseek_r1": DeepSeekR1Parser,
    "qwen3": Qwen3Parser,
}
REASONING_PARSERS: tuple[str, ...] = tuple(_PARSERS)


def reasoning_tags(tokenizer: Any, parser: str) -> ReasoningTags:
    """The tokenizer's ``<think>`` and ``</think>`` tokens; ValueError naming a tag that is
    not one token of its vocabulary."""
    if tokenizer is None:
        raise ValueError(
            f"--reasoning-parser {parser} needs a tokenizer (it finds the {START_TAG} and "
            f"{END_TAG} tokens); leave out --skip-tokenizer-init"
        )
    vocab = tokenizer.get_vocab()
    ids = {}
    for tag in (START_TAG, END_TAG):
        token = vocab.get(tag)
        if token is None:
            raise ValueError(
                f"--reasoning-parser {parser}: the tokenizer has no {tag} token (the parser "
                f"splits the output at the {START_TAG} and {END_TAG} tokens); is this a "
                "thinking model?"
            )
        ids[tag] = int(token)
    # Special by what decoding does: tokens added as special are skipped there, though
    # they are not among all_special_ids.
    special = any(tokenizer.decode([t], skip_special_tokens=True) == "" for t in ids.values())
    return ReasoningTags(START_TAG, END_TAG, ids[START_TAG], ids[END_TAG], special=special)


def make_reasoning_parser(name: str, tokenizer: Any) -> ReasoningParser:
    """The parser called ``name`` over ``tokenizer``'s tags (ValueError: see
    ``reasoning_tags``)."""
    if name not in _PARSERS:
        raise ValueError(
            f"unknown reasoning parser {name!r}; known: {', '.join(REASONING_PARSERS)}"
        )
    return _PARSERS[name](reasoning_tags(tokenizer, name))


def split_output(
    parser: ReasoningParser,
    prompt_ids: Sequence[int],
    template_kwargs: Mapping[str, Any] | None,
    text: str,
    token_ids: Sequence[int],
    tags_in_text: bool = True,
    decode: Callable[[Sequence[int]], str] | None = None,
) -> SplitOutput:
    """A finished output's reasoning and answer: what a stream of it tells, at once
    (``decode``: see ``ReasoningStream.feed_whole``)."""
    thinking = parser.thinking(prompt_ids, template_kwargs)
    stream = ReasoningStream(parser.tags, thinking, tags_in_text)
    piece = stream.feed_whole(text, token_ids, decode)
    return SplitOutput(
        piece.reasoning if thinking else None,
        piece.content or None,
        stream.reasoning_tokens,
        piece.answering,
    )
