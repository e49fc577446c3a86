"""The server's request log (``--enable-log-requests``, ``--enable-log-outputs``): one line
when a request is taken, with its prompt and sampling parameters, and one when it finishes,
with its outputs. Off by default: prompts and outputs are the users' data."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sarathi.outputs import RequestOutput
from sarathi.sampling_params import SamplingParams

logger = logging.getLogger("sarathi.requests")


@dataclass(frozen=True)
class RequestLog:
    # The most characters of a text (or ids of a token-id prompt) a line shows; None: all.
    max_len: int | None = None
    outputs: bool = False  # also a line for each finished request's outputs

    def received(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        text: str | None = None,
    ) -> None:
        """``text``: a token-id prompt's text (``prompt_text``), shown beside its ids."""
        if isinstance(prompt, str):
            shown = f"prompt {self._cut(prompt)} ({len(prompt)} characters)"
        else:
            shown = f"prompt_token_ids {self._cut(prompt)} ({len(prompt)})"
            if text is not None:
                shown = f"prompt {self._cut(text)}, {shown}"
        logger.info("request %s received: %s, params %s", request_id, shown, params)

    def prompt_text(self, tokenizer: Any, ids: list[int]) -> str:
        """The text of a token-id prompt, as far as a line shows it (its first ``max_len``
        ids hold at least ``max_len`` characters): decoded off the event loop by the caller."""
        return str(tokenizer.decode(ids if self.max_len is None else ids[: self.max_len]))

    def outputs_of(self, delta: bool) -> OutputLog | None:
        """What gathers a request's outputs for its finishing line (None: no such line)."""
        return OutputLog(self, delta) if self.outputs else None

    def _cut(self, value: str | list[int]) -> str:
        if self.max_len is None or len(value) <= self.max_len:
            return repr(value)
        return f"{value[: self.max_len]!r}..."


@dataclass
class OutputLog:
    """A request's outputs as its snapshots arrive (whole, or each the new part: ``delta``)."""

    log: RequestLog
    delta: bool
    texts: dict[int, str] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    reasons: dict[int, str | None] = field(default_factory=dict)

    def add(self, out: RequestOutput) -> None:
        for c in out.outputs:
            if self.delta:
                self.texts[c.index] = self.texts.get(c.index, "") + c.text
                self.tokens[c.index] = self.tokens.get(c.index, 0) + len(c.token_ids)
            else:
                self.texts[c.index], self.tokens[c.index] = c.text, len(c.token_ids)
            self.reasons[c.index] = c.finish_reason or self.reasons.get(c.index)
        if not out.finished:
            return
        if out.error is not None:
            logger.info("request %s failed: %s", out.request_id, out.error)
        for i in sorted(self.texts):
            logger.info(
                "request %s output %d finished (%s, %d tokens): %s",
                out.request_id,
                i,
                self.reasons[i],
                self.tokens[i],
                self.log._cut(self.texts[i]),
            )
