"""Sequences (one generated continuation each) and requests (a prompt with n sequences).

A ``Sequence`` holds what the scheduler needs: its tokens, how many of them are in the KV
cache, how many KV blocks it holds. What the caller sees (text, logprobs, finish reason) is
kept by the output processor (``engine/output_processor.py``) in ``SequenceOutput``.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from sarathi.outputs import RequestMetrics
from sarathi.sampling_params import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


# Stands for a token sampled by a step whose results have not reached the host yet (the
# engine schedules step N+1 while step N runs). Only ever the last token of a sequence; the
# model runner reads its value on the device.
PENDING_TOKEN = -1


@dataclass(eq=False)
class Sequence:
    seq_id: int
    index: int  # position within its request (0..n-1)
    request: Request
    token_ids: list[int]  # prompt followed by generated tokens
    prompt_len: int
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0  # tokens whose K/V are in the cache
    num_blocks: int = 0  # KV blocks the scheduler has promised this sequence
    sent_to_worker: bool = False  # the workers know this sequence's sampling options
    # Trailing PENDING_TOKEN placeholders in token_ids: sampled by a step still running.
    num_pending: int = 0

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def num_tokens(self) -> int:
        """Known tokens (placeholders excluded)."""
        return len(self.token_ids) - self.num_pending

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len : self.num_tokens]

    @property
    def num_output(self) -> int:
        return self.num_tokens - self.prompt_len

    @property
    def remaining(self) -> int:
        """Tokens to feed the model before the next sample (placeholders included)."""
        return len(self.token_ids) - self.num_computed

    @property
    def finished(self) -> bool:
        return self.status is SeqStatus.FINISHED


@dataclass(eq=False)
class Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float = field(default_factory=time.monotonic)
    seqs: list[Sequence] = field(default_factory=list)
    metrics: RequestMetrics = field(init=False)
    # The caller reads only the finished output (offline generate): no per-step snapshots.
    final_only: bool = False
    # The caller reads every snapshot (a stream): each carries only the text, token ids
    # and logprobs added since the previous one, the finished one too, so a step's
    # snapshots cost what the step added, not the outputs' length.
    delta: bool = False
    num_cached_tokens: int = 0  # prompt tokens the prefix cache gave its first admission
    # Only requests with the same salt share cached blocks (vLLM's cache_salt: tenants that
    # must not learn from each other's timing).
    cache_salt: str | None = None
    # vLLM's request priority: under the priority scheduling policy a lower value is
    # admitted sooner and preempted later (the policy fcfs takes only 0).
    priority: int = 0
    # Who sent it (the server's API key or the client's address; None offline): clients'
    # requests take turns in the waiting queue (core/waiting_queue.py).
    client: str | None = None
    # Its place in that order, set when the scheduler queues it.
    turn: int = 0

    def __post_init__(self) -> None:
        self.metrics = RequestMetrics(arrival_time=self.arrival_time)
