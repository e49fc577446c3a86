"""What the engine hands back for each request."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


# Slots: one object per alternative, not two (an object and its __dict__), for the
# collector to walk and the engine to make (an output with logprobs makes k + 1 a token).
@dataclass(slots=True)
class Logprob:
    logprob: float
    rank: int  # 1 = most likely token
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    # The output's text, tokens and (where asked) logprobs so far; for a delta request
    # (``delta=True``, vLLM's RequestOutputKind.DELTA) only those added since its previous
    # output, the finished one's too.
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error" | None
    stop_reason: int | str | None = None  # the stop string or token id that ended it
    # Text added since the previous RequestOutput of this request (a delta request's
    # ``text`` is the same).
    text_delta: str = ""
    num_new_tokens: int = 0  # tokens added since the previous RequestOutput
    num_output_tokens: int = 0  # the output's tokens so far, delta or not

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
    is a delta request (its outputs' text, tokens and logprobs are what each added)."""
    outs = []
    for a, b in zip(earlier.outputs, later.outputs, strict=True):
        text, token_ids, logprobs = b.text, b.token_ids, b.logprobs
        if delta:
            text = a.text + b.text
            token_ids = a.token_ids + b.token_ids
            if a.logprobs is not None and b.logprobs is not None:
                logprobs = a.logprobs + b.logprobs
        outs.append(
            replace(
                b,
                text=text,
                token_ids=token_ids,
                logprobs=logprobs,
                text_delta=a.text_delta + b.text_delta,
                num_new_tokens=a.num_new_tokens + b.num_new_tokens,
            )
        )
    prompt_logprobs = later.prompt_logprobs
    if delta and earlier.prompt_logprobs is not None:
        prompt_logprobs = earlier.prompt_logprobs  # a delta request's first output has them
    return replace(later, outputs=outs, prompt_logprobs=prompt_logprobs)


class DeltaAccumulator:
    """A delta request's outputs added up, for a reader that wants the whole output at its
    end (a non-streamed server request): text, tokens and logprobs are extended in place,
    so a long output costs what its deltas do, not its length at every step."""

    def __init__(self) -> None:
        self._last: RequestOutput | None = None
        self._text: dict[int, list[str]] = {}
        self._token_ids: dict[int, list[int]] = {}
        self._logprobs: dict[int, list[dict[int, Logprob]]] = {}
        self._prompt_logprobs: list[dict[int, Logprob] | None] | None = None

    def add(self, out: RequestOutput) -> None:
        for c in out.outputs:
            self._text.setdefault(c.index, []).append(c.text)
            self._token_ids.setdefault(c.index, []).extend(c.token_ids)
            if c.logprobs is not None:
                self._logprobs.setdefault(c.index, []).extend(c.logprobs)
        if out.prompt_logprobs is not None:
            self._prompt_logprobs = out.prompt_logprobs
        self._last = out

    def output(self) -> RequestOutput:
        """The whole output so far: the last output's state with everything added."""
        last = self._last
        if last is None:
            raise ValueError("no output was added")
        outs = []
        for c in last.outputs:
            text = "".join(self._text[c.index])
            token_ids = self._token_ids[c.index]
            outs.append(
                replace(
                    c,
                    text=text,
                    token_ids=token_ids,
                    logprobs=self._logprobs.get(c.index, []) if c.logprobs is not None else None,
                    # As the one output of a request read at its end.
                    text_delta=text,
                    num_new_tokens=len(token_ids),
                )
            )
        return replace(last, outputs=outs, prompt_logprobs=self._prompt_logprobs)
