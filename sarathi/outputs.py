"""What the engine hands back for each request."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class Logprob:
    logprob: float
    rank: int  # 1 = most likely token
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    # The output's tokens so far (and their logprobs, where asked); for a request added with
    # ``delta=True``, until it finishes, only those added since its previous output.
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error" | None
    stop_reason: int | str | None = None  # the stop string or token id that ended it
    text_delta: str = ""  # text added since the previous RequestOutput of this request
    num_new_tokens: int = 0  # tokens added since the previous RequestOutput

    def finished(self) -> bool:
        """Whether this completion has ended (a method, as vLLM's ``CompletionOutput``; a
        ``RequestOutput``'s ``finished`` is a field)."""
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics | None = None
    error: str | None = None  # set when the request failed (e.g. prompt too long)
    num_cached_tokens: int = 0
    extra: dict = field(default_factory=dict)
    # Where asked (SamplingParams.prompt_logprobs), per prompt position: the prompt token's
    # Logprob and its top alternatives; None at position 0, which nothing predicts.
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


def coalesce(earlier: RequestOutput, later: RequestOutput, delta: bool) -> RequestOutput:
    """One output standing for two consecutive outputs of a request that its reader had not
    taken yet: ``later``'s state, with the text and tokens both added. ``delta``: the request
    was added with ``delta=True`` (an unfinished choice's tokens and logprobs are what its
    output added; a finished one carries them all)."""
    outs = []
    for a, b in zip(earlier.outputs, later.outputs, strict=True):
        token_ids, logprobs = b.token_ids, b.logprobs
        if delta and not b.finished():
            token_ids = a.token_ids + b.token_ids
            if a.logprobs is not None and b.logprobs is not None:
                logprobs = a.logprobs + b.logprobs
        outs.append(
            replace(
                b,
                token_ids=token_ids,
                logprobs=logprobs,
                text_delta=a.text_delta + b.text_delta,
                num_new_tokens=a.num_new_tokens + b.num_new_tokens,
            )
        )
    return replace(later, outputs=outs)
