"""Sequences (one generated continuation each) and requests (a prompt with n sequences)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from sarathi.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from sarathi.sampling_params import SamplingParams
from sarathi.transformers_utils.detokenizer import IncrementalDetokenizer


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    index: int  # position within its request (0..n-1)
    request: "Request"
    token_ids: list[int]  # prompt followed by generated tokens
    prompt_len: int
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0  # tokens whose K/V are in the cache
    num_units: int = 0  # KV allocation units the scheduler has promised this sequence
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    cumulative_logprob: float = 0.0
    logprobs: list[dict[int, Logprob]] | None = None
    detok: IncrementalDetokenizer | None = None
    text: str = ""
    emitted_text_len: int = 0  # chars of text already reported to the caller
    emitted_tokens: int = 0
    sent_to_worker: bool = False  # the worker knows this sequence's params
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
        return self.token_ids[self.prompt_len:self.num_tokens]

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
    metrics: RequestMetrics | None = None
    error: str | None = None
    # The caller reads only the finished output (offline generate): no per-step snapshots.
    final_only: bool = False

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = RequestMetrics(arrival_time=self.arrival_time)

    @property
    def finished(self) -> bool:
        for s in self.seqs:
            if s.status is not SeqStatus.FINISHED:
                return False
        return True

    def make_output(self) -> RequestOutput:
        """Snapshot for the caller; text deltas are measured from the previous snapshot."""
        outs = []
        # Until a sequence finishes, hold back text that could be the start of a stop string,
        # so streamed deltas never show a stop string that is later cut.
        hold = self.params.stop_hold
        for s in self.seqs:
            text = s.text if s.finished or not hold else s.text[:max(0, len(s.text) - hold)]
            text = text if len(text) >= s.emitted_text_len else s.text[:s.emitted_text_len]
            delta = text[s.emitted_text_len:]
            new_tokens = s.num_output - s.emitted_tokens
            s.emitted_text_len = len(text)
            s.emitted_tokens = s.num_output
            outs.append(CompletionOutput(
                index=s.index, text=text, token_ids=s.output_ids,  # a fresh slice
                cumulative_logprob=s.cumulative_logprob if s.logprobs is not None else None,
                logprobs=s.logprobs, finish_reason=s.finish_reason, stop_reason=s.stop_reason,
                text_delta=delta, num_new_tokens=new_tokens))
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids, outs,
                             self.finished, self.metrics, self.error)
