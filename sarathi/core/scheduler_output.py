"""The message the scheduler sends to the workers each step, and what comes back.

It is compact on purpose (it crosses process boundaries with tensor parallelism): a
sequence's sampling options travel once, when the workers first see it; afterwards each
step names the sequence and the tokens to process. Decodes, the bulk of every step, travel
as three parallel lists rather than an object each.

Sampled tokens come back in *sampling order*: the decodes in the order given, then the
chunks whose ``sample`` is set, in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sarathi.sampling_params import SamplingParams


@dataclass
class NewSequence:
    seq_id: int
    params: SamplingParams
    prompt_len: int
    seed: int | None


@dataclass
class ScheduledChunk:
    """Part of a prompt (or of a preempted sequence being recomputed)."""

    seq_id: int
    start: int  # position of the first token of the chunk
    token_ids: list[int]
    sample: bool  # the chunk ends at the sequence's last token: sample the next one
    # Prompt logprobs asked of this chunk's rows (top-k; None: not asked): each row's
    # log-probability of the prompt token after it, up to the prompt's last token.
    prompt_logprobs: int | None = None
    # The prompt token after the chunk's last, when the chunk asks prompt logprobs and ends
    # before the prompt's last token (the next chunk's first token).
    next_prompt_token: int | None = None
    # The tokens before ``start`` when the prefix cache supplied them (the first chunk after
    # a hit) and sampling reads every earlier token (penalties, bad words).
    history_head: list[int] | None = None


@dataclass
class TokenMasks:
    """Which tokens the constrained rows of a step may sample: bit ``t % 32`` of word
    ``t // 32`` of a row's mask is set when token ``t`` is allowed; tokens past the mask
    (the model's padded vocabulary) are never allowed."""

    rows: np.ndarray  # [R] int64, rows in sampling order
    bits: np.ndarray  # [R, words] int32


@dataclass
class StepInput:
    # One token each, every one sampled: decode i feeds token decode_tokens[i] (which may
    # be PENDING_TOKEN) at position decode_positions[i] of sequence decode_seq_ids[i].
    decode_seq_ids: list[int] = field(default_factory=list)
    decode_positions: list[int] = field(default_factory=list)
    decode_tokens: list[int] = field(default_factory=list)
    chunks: list[ScheduledChunk] = field(default_factory=list)
    new_sequences: list[NewSequence] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)  # free the slot, keep the state
    finished: list[int] = field(default_factory=list)  # forget the sequence
    # Grammar masks of the constrained rows. With ``masks_follow`` they are not known yet
    # (they depend on the step still running before this one): the executor queues the
    # forward and waits for ``Executor.sample`` to queue the sampling.
    token_masks: TokenMasks | None = None
    masks_follow: bool = False
    # Prefix caching (core/prefix_cache.py), applied in this order before the step runs:
    # keep block ``b`` of sequence ``s`` as cache entry ``e`` for each (s, b, e); drop these
    # entries; a sequence taking its slot now starts it with these entries' blocks.
    cache_registrations: list[tuple[int, int, int]] = field(default_factory=list)
    cache_evictions: list[int] = field(default_factory=list)
    prefix_hits: dict[int, list[int]] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.decode_seq_ids) + sum(len(c.token_ids) for c in self.chunks)

    @property
    def has_work(self) -> bool:
        """Tokens to run (bookkeeping alone, finished or preempted sequences, runs no model)."""
        return bool(self.decode_seq_ids or self.chunks)

    @property
    def has_bookkeeping(self) -> bool:
        """Messages for the workers that run no model: slots to free, cache entries."""
        return bool(
            self.finished or self.preempted or self.cache_registrations or self.cache_evictions
        )


@dataclass
class TokenLogprobs:
    """The sampled token's raw log-probability and rank (1 = most likely), and the top-k
    alternatives as (token id, logprob, rank)."""

    logprob: float
    rank: int
    top: list[tuple[int, float, int]]


@dataclass
class PromptLogprobs:
    """Logprobs of prompt tokens from one chunk: ``logprobs[i]`` is the prompt token at
    position ``start + i`` given the tokens before it."""

    seq_id: int
    start: int
    logprobs: list[TokenLogprobs]


@dataclass
class StepResult:
    token_ids: list[int]  # in sampling order
    # Per sampled row, where its sequence asked for logprobs; None when no row did.
    logprobs: list[TokenLogprobs | None] | None = None
    # Per chunk that asked for prompt logprobs, in the step's order; None when none did.
    prompt_logprobs: list[PromptLogprobs] | None = None
