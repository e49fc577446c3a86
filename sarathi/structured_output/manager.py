"""Per-sequence grammar matchers, and the masks of the rows a step samples."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import llguidance
import numpy as np

from sarathi.core.scheduler_output import TokenMasks
from sarathi.reasoning import ReasoningTags
from sarathi.sampling_params import SamplingParams, StructuredOutputsParams
from sarathi.sequence import Sequence as Seq
from sarathi.structured_output.compiler import compile_grammar
from sarathi.structured_output.vocabulary import grammar_vocabulary

logger = logging.getLogger("sarathi")

# Compiled grammars kept for reuse (clients tend to send the same few schemas).
_CACHE_SIZE = 256


def _mask_threads() -> int:
    """Threads that compute a step's masks. A quarter of the cores: the pool's threads spin
    a while after each step, and more of them starve the threads that launch (or, on a CPU,
    run) the model; one thread computes a 64-row step of a 32k vocabulary in about 1 ms."""
    return max(1, min(16, (os.cpu_count() or 1) // 4))


def _end_banned(p: SamplingParams, token: int, num_output: int) -> bool:
    """Whether the request's own options banned ``token``, sampled after its constraint was
    complete (``num_output`` tokens before it). The end of text was then the grammar's only
    token, so the row had none left and the sampler drew token 0 from it; the matcher
    refuses that token, unless token 0 is the end of text itself (the demo model's), which
    it takes: the output then ended "stop", as if min_tokens were met."""
    return (not p.ignore_eos and num_output < p.min_tokens) or (
        p.allowed_token_ids is not None and token not in p.allowed_token_ids
    )


class StructuredOutputManager:
    """Owns the grammar matchers of constrained sequences.

    ``compile`` may be called from any thread (the server validates a request's grammar
    in a worker thread, before the request reaches the engine); every other method is
    the engine loop's.

    With ``reasoning`` (a reasoning parser's tags), a sequence whose prompt has not closed
    the reasoning is free until it samples the end tag: its grammar constrains from the
    token after it on, as vLLM's reasoning-aware structured outputs do."""

    def __init__(
        self, tokenizer: Any, eos_ids: Iterable[int], reasoning: ReasoningTags | None = None
    ) -> None:
        self._tokenizer = tokenizer
        self._eos = sorted(eos_ids)
        self._reasoning = reasoning
        # Constrained sequences still reasoning: no mask until their end tag is sampled.
        self._thinking: set[int] = set()
        self._lock = threading.Lock()
        self._vocabulary: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._matchers: dict[int, llguidance.LLMatcher] = {}
        self._executor: llguidance.LLExecutor | None = None

    @property
    def vocabulary(self) -> llguidance.LLTokenizer:
        """Built on first use: reading a large vocabulary takes about a second."""
        with self._lock:
            if self._vocabulary is None:
                if self._tokenizer is None:
                    raise ValueError(
                        "structured outputs need a tokenizer; this engine runs without one "
                        "(--skip-tokenizer-init)"
                    )
                self._vocabulary = grammar_vocabulary(self._tokenizer, self._eos)
            return self._vocabulary

    @property
    def mask_words(self) -> int:
        return (self.vocabulary.vocab_size + 31) // 32

    def special_tokens(self, texts: Iterable[str]) -> dict[str, int]:
        """Those of ``texts`` that are one special token of the vocabulary, with its id: a
        grammar names such a token by its id, as its text does not spell it."""
        vocabulary = self.vocabulary
        found = {}
        for text in texts:
            ids = vocabulary.tokenize_str(text, parse_special=True)
            if len(ids) == 1 and vocabulary.is_special_token(ids[0]):
                found[text] = ids[0]
        return found

    def compile(self, spec: StructuredOutputsParams) -> llguidance.LLMatcher:
        """The start state of ``spec``'s grammar (cached); ValueError when it is invalid."""
        key = spec.key()
        with self._lock:
            hit = self._compiled.get(key)
            if hit is not None:
                self._compiled.move_to_end(key)
                return hit
        matcher = compile_grammar(spec, self.vocabulary)
        with self._lock:
            self._compiled[key] = matcher
            while len(self._compiled) > _CACHE_SIZE:
                self._compiled.popitem(last=False)
        return matcher

    # -- the engine loop ---------------------------------------------------------------------
    def add(
        self, seq_ids: Sequence[int], spec: StructuredOutputsParams, prompt_ids: Sequence[int] = ()
    ) -> None:
        start = self.compile(spec)
        r = self._reasoning
        thinking = r is not None and not r.prompt_ends_reasoning(prompt_ids)
        for seq_id in seq_ids:
            self._matchers[seq_id] = start.deep_copy()
            if thinking:
                self._thinking.add(seq_id)

    def remove(self, seq_id: int) -> None:
        self._matchers.pop(seq_id, None)
        self._thinking.discard(seq_id)

    def thinking(self, seq_id: int) -> bool:
        """Whether the sequence is still reasoning (its grammar not yet begun)."""
        return seq_id in self._thinking

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._matchers

    def __bool__(self) -> bool:
        return bool(self._matchers)

    def accept(
        self, seqs: Sequence[Seq], tokens: Sequence[int], indices: Sequence[int]
    ) -> dict[int, str]:
        """Advance the matchers of a step's constrained sequences by their sampled tokens
        (``seqs`` in sampling order, ``indices`` the positions their tokens were sampled
        at; those that stopped while the step ran are skipped). Returns the sequences whose
        grammar failed on this step, with the reason: only a token the mask allowed is
        sampled, so a failure is a grammar past llguidance's limits (``a{1000000}``
        compiles, then fails on its first token), a row the request's own options left no
        token, or a bug. The engine ends them with an error: the rest of their output
        could not follow it."""
        failed: dict[int, str] = {}
        matchers = self._matchers
        thinking = self._thinking
        for seq, token, index in zip(seqs, tokens, indices, strict=True):
            m = matchers.get(seq.seq_id)
            if m is None or seq.finished:
                continue
            if seq.seq_id in thinking:
                # The end tag itself is reasoning's; the grammar starts at the next token.
                assert self._reasoning is not None
                if token == self._reasoning.end_id:
                    thinking.discard(seq.seq_id)
                continue
            # A matcher that failed computing its mask (past llguidance's limits) is stopped
            # too, but it is not complete: its failure is reported as what it is.
            failed_mask = m.is_error()
            complete = not failed_mask and m.is_stopped()  # then only the end of text may follow
            if (
                failed_mask
                or (complete and _end_banned(seq.params, token, index - seq.prompt_len))
                or not m.consume_token(token)
            ):
                if complete:
                    reason = (
                        "the constraint was complete and the request asked for more tokens "
                        "(min_tokens, or allowed_token_ids or bad_words that leave out the "
                        "end of text)"
                    )
                else:
                    error = (m.get_error() or "the token was refused").strip().splitlines()[0]
                    reason = f"{error}; it may be past the structured-output engine's limits"
                logger.warning(
                    "request %s left its output constraint: %s", seq.request.request_id, reason
                )
                failed[seq.seq_id] = (
                    f"the output constraint failed at output token {seq.num_output + 1}: {reason}"
                )
        return failed

    def masks(self, seqs: Sequence[Seq]) -> TokenMasks | None:
        """The masks of the constrained rows among ``seqs`` (a step's sampling order)."""
        matchers, thinking = self._matchers, self._thinking
        rows = [i for i, s in enumerate(seqs) if s.seq_id in matchers and s.seq_id not in thinking]
        if not rows:
            return None
        bits = np.zeros((len(rows), self.mask_words), dtype=np.int32)
        work = [(matchers[seqs[r].seq_id], i) for i, r in enumerate(rows)]
        if self._executor is None:
            self._executor = llguidance.LLExecutor(num_threads=_mask_threads())
        # Every row in parallel, outside the GIL.
        self._executor.unsafe_compute_mask_ptr(work, bits.ctypes.data, bits.shape[1] * 4, len(rows))
        return TokenMasks(np.asarray(rows, dtype=np.int64), bits)
