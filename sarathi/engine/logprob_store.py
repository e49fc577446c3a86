"""A running sequence's sampled logprobs, kept as plain numbers until an output carries them.

vLLM's form of one position, a ``dict[int, Logprob]`` of the token and its alternatives,
is ``k + 2`` objects the cyclic garbage collector tracks. Kept for every position of every
running sequence (128 streams with 20 alternatives over 1,000 tokens: millions), each
collection of the older generations walked them all and paused the engine thread for
hundreds of milliseconds. Here a position is one tuple of ints and floats: the collector
stops tracking such a tuple the first time it sees it, so it never walks it again. The
position's dict is made only when an output carries it.

A tuple a position, not arrays over the sequence: filling arrays cost three times as much
a token (measured), as every value passes through Python one at a time.
"""

from __future__ import annotations

from itertools import chain

from sarathi.core.scheduler_output import TokenLogprobs
from sarathi.outputs import Logprob


class LogprobStore:
    """Per position: (token id, logprob, rank) of the sampled token, then its alternatives'."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[tuple[int | float, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, token: int, lp: TokenLogprobs) -> None:
        self._rows.append((token, lp.logprob, lp.rank, *chain.from_iterable(lp.top)))

    def entries(self, start: int, end: int) -> list[dict[int, Logprob]]:
        """vLLM's entries of positions ``start`` to ``end``: the token's Logprob first,
        then its alternatives' (an alternative that is the token itself is not repeated)."""
        out = []
        for row in self._rows[start:end]:
            values = iter(row)
            entry: dict[int, Logprob] = {}
            for tid, value, rank in zip(values, values, values, strict=True):
                if tid not in entry:
                    entry[tid] = Logprob(value, rank)  # type: ignore[arg-type]
            out.append(entry)
        return out
