"""A running sequence's sampled logprobs, kept in flat arrays until an output carries them.

vLLM's form of one position, a ``dict[int, Logprob]`` of the token and its alternatives,
is ``k + 2`` objects the cyclic garbage collector tracks. Kept for every position of every
running sequence (128 streams with 20 alternatives over 1,000 tokens: millions), each
collection of the older generations walked them all and paused the engine thread for
hundreds of milliseconds. Here a position is a few numbers in arrays the collector does
not look into; its dict is made only when an output carries the position.
"""

from __future__ import annotations

from array import array

from sarathi.core.scheduler_output import TokenLogprobs
from sarathi.outputs import Logprob


class LogprobStore:
    """Per position: the sampled token's id, logprob and rank, then its alternatives'."""

    __slots__ = ("_ids", "_ranks", "_starts", "_values")

    def __init__(self) -> None:
        self._ids = array("q")
        self._values = array("d")
        self._ranks = array("q")
        # Position i's entries are [_starts[i], _starts[i + 1]).
        self._starts = array("q", [0])

    def __len__(self) -> int:
        return len(self._starts) - 1

    def append(self, token: int, lp: TokenLogprobs) -> None:
        ids, values, ranks = self._ids, self._values, self._ranks
        ids.append(token)
        values.append(lp.logprob)
        ranks.append(lp.rank)
        if lp.top:
            top_ids, top_values, top_ranks = zip(*lp.top, strict=True)
            ids.extend(top_ids)
            values.extend(top_values)
            ranks.extend(top_ranks)
        self._starts.append(len(ids))

    def entries(self, start: int, end: int) -> list[dict[int, Logprob]]:
        """vLLM's entries of positions ``start`` to ``end``: the token's Logprob first,
        then its alternatives' (an alternative that is the token itself is not repeated)."""
        ids, values, ranks, starts = self._ids, self._values, self._ranks, self._starts
        out = []
        for pos in range(start, end):
            first, last = starts[pos], starts[pos + 1]
            entry = {ids[first]: Logprob(values[first], ranks[first])}
            for j in range(first + 1, last):
                tid = ids[j]
                if tid not in entry:
                    entry[tid] = Logprob(values[j], ranks[j])
            out.append(entry)
        return out
