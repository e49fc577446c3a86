"""The message the scheduler sends to the workers each step, and what comes back.

It is compact on purpose (it crosses process boundaries with tensor parallelism): a
sequence's sampling options travel once, when the workers first see it; afterwards each
step names the sequence and the tokens to process (for a decode, the one new token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sarathi.sampling_params import SamplingParams


# Stands for a token sampled by a step whose results have not reached the host yet (the
# engine schedules step N+1 while step N runs). Only ever the last token of a chunk; the
# runner reads its value from step N's ids on the device.
PENDING_TOKEN = -1


@dataclass
class NewSequence:
    seq_id: int
    params: SamplingParams
    prompt_len: int
    seed: int | None


@dataclass
class ScheduledChunk:
    seq_id: int
    start: int  # position of the first token of the chunk
    token_ids: list[int]
    sample: bool  # the chunk ends at the sequence's last token: sample the next one


@dataclass
class StepInput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    new_sequences: list[NewSequence] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)  # free the slot, keep the state
    finished: list[int] = field(default_factory=list)  # forget the sequence

    @property
    def num_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)


@dataclass
class SampledToken:
    seq_id: int
    token_id: int
    logprob: float | None = None
    # top-k alternatives: (token id, logprob, rank), with the sampled token's own rank
    top: list[tuple[int, float, int]] | None = None
    rank: int | None = None


@dataclass
class StepResult:
    sampled: list[SampledToken]
