"""Per-request sampling options (vLLM-shaped)."""

from __future__ import annotations

import copy
import json
import math
import numbers
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

_MAX_TOP_K = 2**31 - 1
# The options a model's generation_config.json may default (read as vLLM reads them).
MODEL_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
# The fields read as numbers; numpy's are taken as Python's (SamplingParams._plain_numbers).
_INT_FIELDS = (
    "n",
    "top_k",
    "seed",
    "max_tokens",
    "min_tokens",
    "logprobs",
    "prompt_logprobs",
    "truncate_prompt_tokens",
    "best_of",
)
_FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
# Temperatures below this are greedy (vLLM's rule): dividing logits by a tinier one overflows.
GREEDY_BELOW = 1e-5


def keeps_prompt_tail(truncate_prompt_tokens: int) -> bool:
    """Whether ``truncate_prompt_tokens`` is one vLLM takes: k >= 1 (the prompt's last k
    tokens), or -1 (as many as the context holds with room for one generated token)."""
    return truncate_prompt_tokens >= 1 or truncate_prompt_tokens == -1


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be encoded (a lone surrogate, e.g. "\\ud800", cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RequestOutputKind(Enum):
    """vLLM's: what each output of a running request carries. ``LLM.generate`` returns
    finished outputs whatever it says (as vLLM's does); ``LLMEngine.add_request`` reads
    FINAL_ONLY as ``final_only=True``."""

    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass(frozen=True)
class StructuredOutputsParams:
    """What the output must match (set exactly one; vLLM's name for it): a JSON schema, any
    JSON object, a regular expression, one of fixed strings, or a context-free grammar (Lark
    or GBNF).

    Tokens that would break the constraint are masked before sampling, so even a
    random-weight model writes matching text (unless it runs out of ``max_tokens``).
    """

    json: dict[str, Any] | str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    # vLLM's options. Both flags have one answer here, whatever they say: JSON is written
    # with no free whitespace and objects take only the properties their schema lists
    # (docs/structured-outputs.md), as the server takes them. A whitespace pattern and a
    # structural tag would change the output, so they are refused, as on the server.
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self) -> None:
        why = {
            "whitespace_pattern": "JSON is written with no free whitespace",
            "structural_tag": "no tags trigger a constraint mid-output",
        }
        for name, reason in why.items():
            if getattr(self, name) is not None:
                raise ValueError(
                    f"structured_outputs {name} is not supported ({reason}; constrain the "
                    "output with json, regex, choice or grammar)"
                )
        if isinstance(self.choice, list):
            object.__setattr__(self, "choice", tuple(self.choice))
        kinds = [k for k in ("json", "regex", "choice", "grammar") if getattr(self, k) is not None]
        if self.json_object:
            kinds.append("json_object")
        if len(kinds) != 1:
            raise ValueError(
                "structured_outputs must set exactly one of json, json_object, regex, choice "
                f"and grammar, got {kinds or 'none'}"
            )
        if self.choice is not None and (
            not self.choice or any(not isinstance(c, str) for c in self.choice)
        ):
            raise ValueError("structured_outputs choice must be a non-empty list of strings")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"structured_outputs {name} must be a non-empty string")
        if self.json is not None and not isinstance(self.json, (dict, str)):
            raise ValueError("structured_outputs json must be a JSON schema (object or string)")

    @property
    def kind(self) -> str:
        if self.json_object:
            return "json_object"
        return next(
            k for k in ("json", "regex", "choice", "grammar") if getattr(self, k) is not None
        )

    def key(self) -> str:
        """A stable text that names the constraint (for caching compiled grammars)."""
        value: Any = True if self.json_object else getattr(self, self.kind)
        # Keys keep their order: a schema's property order is the order the output writes
        # them in (OpenAI's contract), so schemas listing the same properties in another
        # order are other grammars.
        return json.dumps([self.kind, value], ensure_ascii=False)


@dataclass
class SamplingParams:
    """How to pick tokens for one request.

    ``temperature=0`` (or below ``GREEDY_BELOW``, as in vLLM) is greedy. ``seed`` makes a
    request's samples reproducible whatever else runs in the same batch. Stop strings are
    matched on the decoded text (across token boundaries) and are not included in the output
    text.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    # 0 (vLLM's default) or -1 (vLLM's older default): every token.
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # A string or None is accepted and stored as a list ([] for None).
    stop: list[str] | str | None = None
    # None is accepted and stored as [].
    stop_token_ids: list[int] = field(default_factory=list)
    max_tokens: int | None = 16
    min_tokens: int = 0
    ignore_eos: bool = False
    # This and prompt_logprobs: at most the engine's max_logprobs (20 unless configured);
    # -1, vLLM's: the whole vocabulary (where max_logprobs allows it).
    logprobs: int | None = None
    # vLLM's: the log-probability, rank and top-k alternatives of every prompt token given
    # those before it (RequestOutput.prompt_logprobs; the first token has none).
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    # Accepted so vLLM code runs; ignored, as vLLM's detokenizer for fast tokenizers does.
    spaces_between_special_tokens: bool = True
    # False: outputs carry token ids only (text "", no stop strings), as vLLM's.
    detokenize: bool = True
    include_stop_str_in_output: bool = False
    # Added to the logits of these token ids before sampling (OpenAI's -100..100; -100 bans).
    logit_bias: dict[int, float] | None = None
    # Only these token ids may be sampled (vLLM's).
    allowed_token_ids: list[int] | None = None
    # Constrained decoding: the output must match this (structured_output/).
    structured_outputs: StructuredOutputsParams | None = None
    # vLLM's: keep only the prompt's last k tokens (left truncation); -1: as many as the
    # context takes with room for one generated token. None: the whole prompt.
    truncate_prompt_tokens: int | None = None
    # vLLM's: words the output must never contain as tokens (see ``bad_words_token_ids``).
    bad_words: list[str] | None = None
    # vLLM's fields that this engine takes only at their neutral values, so vLLM code that
    # spells them out runs, and any other value is a ValueError saying what to use instead:
    # best_of (None or n), logits_processors (None or empty), guided_decoding (None).
    best_of: int | None = None
    logits_processors: list[Callable[..., Any]] | None = None
    guided_decoding: Any = field(default=None, repr=False)
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    # Each bad word as token ids, as written and after a space; set by the engine from its
    # tokenizer when the request is added. A one-token word is banned at every step; a longer
    # one's last token is banned right after the tokens before it were generated.
    bad_words_token_ids: list[list[int]] = field(default_factory=list, init=False, repr=False)
    # ``stop`` as a tuple, and the characters of streamed text held back (the longest stop
    # string but one): set by ``verify``, plain fields since every step reads them.
    stop_list: tuple[str, ...] = field(default=(), init=False, repr=False)
    stop_hold: int = field(default=0, init=False, repr=False)
    # Derived by ``verify`` wherever the params are built (step messages leave them out):
    # ``allowed_token_ids`` as a set, which the engine checks every sampled token against
    # (``banned_by_options``), and whether the options ban tokens (allowed_token_ids,
    # min_tokens, bad_words), so that they may leave a step no token to sample.
    allowed_set: frozenset[int] | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"derived": True}
    )
    bans_tokens: bool = field(
        default=False, init=False, repr=False, compare=False, metadata={"derived": True}
    )

    def __post_init__(self) -> None:
        self.verify()

    def verify(self) -> None:
        """Normalise and check every field (ValueError naming the one at fault): at
        construction, and again when the engine takes a request, since vLLM code changes a
        built SamplingParams in place (``params = llm.get_default_sampling_params();
        params.stop = [...]``), and a value set so unchecked could stall the engine (n=0
        never finishes)."""
        self._plain_numbers()
        if self.seed == -1:  # vLLM's "no seed" (OpenAI clients send it)
            self.seed = None
        self._check_types()
        # Lists, as vLLM keeps them: its code extends them in place (params.stop.append(...)).
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self._read_stops()
        self._validate()
        self.bans_tokens = (
            self.allowed_set is not None or self.min_tokens > 0 or bool(self.bad_words)
        )

    def _read_stops(self) -> None:
        """Derive ``stop_list`` and ``stop_hold`` from ``stop`` (ValueError for a bad one)."""
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if stops and not self.detokenize:
            raise ValueError(
                "stop needs detokenize=True (stop strings are matched on the text), "
                f"got {self.stop!r}"
            )
        self.stop_list = stops
        self.stop_hold = max((len(x) for x in stops), default=1) - 1

    def _plain_numbers(self) -> None:
        """numpy's integers and floats as Python's, as vLLM takes them (a script's
        ``max_tokens`` often comes from an array or a DataFrame column): the checks below
        and the engine see one type. Bools stay bools, to be refused as numbers."""
        for name in _INT_FIELDS:
            setattr(self, name, _as_int(getattr(self, name)))
        for name in _FLOAT_FIELDS:
            setattr(self, name, _as_float(getattr(self, name)))
        for name in ("stop_token_ids", "allowed_token_ids"):
            ids = getattr(self, name)
            if isinstance(ids, list | tuple):
                setattr(self, name, [_as_int(t) for t in ids])
        if isinstance(self.logit_bias, dict):
            self.logit_bias = {_as_int(t): _as_float(v) for t, v in self.logit_bias.items()}

    def _check_types(self) -> None:
        """Wrong types are ValueErrors naming the field, like wrong values."""
        if self.stop is not None and not isinstance(self.stop, (str, list, tuple)):
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}")
        if self.stop_token_ids is not None and not isinstance(self.stop_token_ids, (list, tuple)):
            raise ValueError(
                f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}"
            )
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        # A truthy string or None would otherwise pass for a flag unnoticed.
        for name in (
            "ignore_eos",
            "skip_special_tokens",
            "spaces_between_special_tokens",
            "detokenize",
            "include_stop_str_in_output",
        ):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        # bool is an int subclass: n=True or max_tokens=True are mistakes, not 1.
        for name in ("n", "top_k", "max_tokens", "min_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")

    def _validate(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{name} {rule}, got {getattr(self, name)!r}")

        if not isinstance(self.n, int) or self.n < 1:
            raise bad("n", "must be an integer >= 1")
        if self.temperature < 0:
            raise bad("temperature", "must be >= 0")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]")
        # The bound: the sampler holds top_k in a 64-bit integer (2**70 would raise inside
        # the engine loop's step and stop it); any top_k past the vocabulary keeps every token.
        if not isinstance(self.top_k, int) or not -1 <= self.top_k <= _MAX_TOP_K:
            raise bad("top_k", f"must be 0 or -1 (disabled) or an integer in [1, {_MAX_TOP_K}]")
        if not 0 <= self.min_p <= 1:
            raise bad("min_p", "must be in [0, 1]")
        if not -2 <= self.presence_penalty <= 2:
            raise bad("presence_penalty", "must be in [-2, 2]")
        if not -2 <= self.frequency_penalty <= 2:
            raise bad("frequency_penalty", "must be in [-2, 2]")
        if self.repetition_penalty <= 0:
            raise bad("repetition_penalty", "must be > 0")
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens < 1
        ):
            raise bad("max_tokens", "must be an integer >= 1 or None")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise bad("min_tokens", "must be an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise bad("min_tokens", f"must not exceed max_tokens ({self.max_tokens})")
        # No upper bound here: the engine that takes the request caps both at its
        # max_logprobs (LLMEngine.check_logprobs), as vLLM's does.
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < -1
            ):
                raise bad(name, "must be an integer >= 0, -1 (the whole vocabulary) or None")
        if self.best_of is not None:
            if isinstance(self.best_of, bool) or not isinstance(self.best_of, int):
                raise bad("best_of", "must be an integer or None")
            if self.best_of < self.n:
                raise bad("best_of", f"must be >= n ({self.n})")
            if self.best_of > self.n:
                raise bad(
                    "best_of",
                    f"other than n ({self.n}) is not supported (nor by vLLM V1); ask for "
                    "n=best_of completions and pick among them (e.g. with logprobs)",
                )
        if self.logits_processors:
            raise bad(
                "logits_processors",
                "(per-request callables) are not supported (nor by vLLM V1); use logit_bias, "
                "allowed_token_ids, bad_words or structured_outputs",
            )
        if self.guided_decoding is not None:
            raise ValueError(
                "guided_decoding (vLLM's older name) is not supported; pass "
                "structured_outputs=StructuredOutputsParams(json=..., regex=..., choice=..., "
                "grammar=... or json_object=True)"
            )
        if not isinstance(self.output_kind, RequestOutputKind):
            raise bad("output_kind", "must be a RequestOutputKind")
        if self.truncate_prompt_tokens is not None and (
            isinstance(self.truncate_prompt_tokens, bool)
            or not isinstance(self.truncate_prompt_tokens, int)
            or not keeps_prompt_tail(self.truncate_prompt_tokens)
        ):
            raise bad("truncate_prompt_tokens", "must be an integer >= 1, or -1, or None")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not -(2**63) <= self.seed < 2**63
        ):
            raise bad("seed", "must be a 64-bit integer")
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "must be non-negative integers")
        if self.logit_bias is not None and (
            not isinstance(self.logit_bias, dict)
            or any(
                isinstance(t, bool)
                or not isinstance(t, int)
                or t < 0
                or isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not -100 <= v <= 100
                for t, v in self.logit_bias.items()
            )
        ):
            raise bad("logit_bias", "must map token ids to numbers in [-100, 100]")
        if self.allowed_token_ids is not None and (
            not isinstance(self.allowed_token_ids, (list, tuple))
            or not self.allowed_token_ids
            or any(
                isinstance(t, bool) or not isinstance(t, int) or t < 0
                for t in self.allowed_token_ids
            )
        ):
            raise bad("allowed_token_ids", "must be a non-empty list of token ids")
        allowed = self.allowed_token_ids
        self.allowed_set = None if allowed is None else frozenset(allowed)
        if self.structured_outputs is not None and not isinstance(
            self.structured_outputs, StructuredOutputsParams
        ):
            raise bad("structured_outputs", "must be a StructuredOutputsParams")
        if self.bad_words is not None and (
            not isinstance(self.bad_words, (list, tuple))
            or any(not isinstance(w, str) or not w or not is_unicode(w) for w in self.bad_words)
        ):
            # Unicode: the tokenizer raises a bare TypeError for a lone surrogate.
            raise bad("bad_words", "must be a list of non-empty strings of valid Unicode")

    def clone(self) -> SamplingParams:
        """An independent copy (vLLM's): changing its lists or dicts leaves this one as it is."""
        return copy.deepcopy(self)

    def output_modes(self, final_only: bool, delta: bool) -> tuple[bool, bool]:
        """(final_only, delta) as a request added with these flags and these params reads
        them: ``output_kind`` FINAL_ONLY or DELTA asks for one too, and a request asked for
        its finished output only gets no deltas (nothing streams)."""
        final_only = final_only or self.output_kind is RequestOutputKind.FINAL_ONLY
        delta = (delta or self.output_kind is RequestOutputKind.DELTA) and not final_only
        return final_only, delta

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def shapes_logits(self) -> bool:
        """Whether a row's logits change before sampling (each such row is worked on alone)."""
        return (
            self.has_penalties
            or self.min_tokens > 0
            or bool(self.logit_bias)
            or self.allowed_token_ids is not None
            or bool(self.bad_words_token_ids)
        )

    @property
    def needs_history(self) -> bool:
        """Whether sampling reads the exact tokens so far: penalties, and bad words of more
        than one token (their last token is banned only after the others)."""
        return self.has_penalties or any(len(w) > 1 for w in self.bad_words_token_ids)

    @property
    def has_penalties(self) -> bool:
        return (
            self.presence_penalty != 0
            or self.frequency_penalty != 0
            or self.repetition_penalty != 1
        )


def _as_int(value: Any) -> Any:
    """A numpy integer as Python's; anything else as it is, for the checks to judge."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _as_float(value: Any) -> Any:
    """A numpy number as a Python float; Python's numbers (and anything else) as they are."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
        return float(value)
    return value


def bad_word_bans(
    words: list[list[int]], history: Sequence[int] | None, prompt_len: int
) -> list[int]:
    """The tokens that would complete a bad word now: a one-token word's token always, a
    longer word's last token when the tokens generated just before it are the word's others
    (``history``: every token so far, prompt first; needed when a word is longer than one
    token)."""
    bans = []
    for word in words:
        head = word[:-1]
        if head:
            assert history is not None
            start = len(history) - len(head)
            if start < prompt_len or list(history[start:]) != head:
                continue
        bans.append(word[-1])
    return bans


def min_tokens_bans(p: SamplingParams, eos_ids: Collection[int]) -> list[int]:
    """The tokens min_tokens bans until it is met: the stop token ids and, unless
    ignore_eos, the end of text (``eos_ids``)."""
    return list(p.stop_token_ids) + ([] if p.ignore_eos else list(eos_ids))


def first_token_bans(p: SamplingParams, eos_ids: Collection[int]) -> set[int]:
    """The tokens a request's own options ban as its first output token: its one-token bad
    words, and, while min_tokens is unmet, what it bans."""
    banned = {w[0] for w in p.bad_words_token_ids if len(w) == 1}
    if p.min_tokens > 0:
        banned.update(min_tokens_bans(p, eos_ids))
    return banned


def banned_by_options(
    p: SamplingParams,
    token: int,
    num_output: int,
    eos_ids: Collection[int],
    history: Sequence[int] | None,
    prompt_len: int,
) -> bool:
    """Whether the request's own options (allowed_token_ids, min_tokens, bad_words) banned
    ``token`` as output token ``num_output`` (0-based), after ``history`` (every token
    before it; read only for bad words longer than one token). The sampler sets a banned
    token's logit to -inf, so one is sampled only from a row the options left no token:
    the output cannot go on."""
    if p.allowed_set is not None and token not in p.allowed_set:
        return True
    if num_output < p.min_tokens and token in min_tokens_bans(p, eos_ids):
        return True
    return bool(p.bad_words_token_ids) and token in bad_word_bans(
        p.bad_words_token_ids, history, prompt_len
    )
