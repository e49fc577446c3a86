"""A running sequence's sampled logprobs, kept packed until an output carries them.

vLLM's form of one position, a ``dict[int, Logprob]`` of the token and its alternatives,
is ``k + 2`` objects the cyclic garbage collector tracks. Kept for every position of every
running sequence (128 streams with 20 alternatives over 1,000 tokens: millions), each
collection of the older generations walked them all and paused the engine thread for
hundreds of milliseconds. Here a sequence's positions are bytes in one buffer, which the
collector does not look into; a position's dict is made only when an output carries it.

Packed with ``struct``, a position at once: filling typed arrays cost twice as much a
token (every value went through Python alone), and a tuple a position, the cheapest to
fill, is an object the collector tracks until it first sees it (pauses of 30-50 ms left
over 1,000 steps of the run above, where the packed buffer leaves none). All measured.
"""

from __future__ import annotations

import struct
from array import array
from itertools import chain

from sarathi.core.scheduler_output import TokenLogprobs
from sarathi.outputs import Logprob


class LogprobStore:
    """Per position: (token id, logprob, rank) of the sampled token, then its alternatives'."""

    __slots__ = ("_buf", "_layouts", "_starts")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._starts = array("q", [0])  # position i is _buf[_starts[i]:_starts[i + 1]]
        self._layouts: dict[int, struct.Struct] = {}  # by the number of alternatives

    def __len__(self) -> int:
        return len(self._starts) - 1

    def append(self, token: int, lp: TokenLogprobs) -> None:
        top = lp.top
        self._buf += self._layout(len(top)).pack(
            token, lp.logprob, lp.rank, *chain.from_iterable(top)
        )
        self._starts.append(len(self._buf))

    def entries(self, start: int, end: int) -> list[dict[int, Logprob]]:
        """vLLM's entries of positions ``start`` to ``end``: the token's Logprob first,
        then its alternatives' (an alternative that is the token itself is not repeated)."""
        buf, starts = self._buf, self._starts
        out = []
        for pos in range(start, end):
            offset = starts[pos]
            size = starts[pos + 1] - offset
            values = iter(self._layout(size // _TRIPLE - 1).unpack_from(buf, offset))
            entry: dict[int, Logprob] = {}
            for tid, value, rank in zip(values, values, values, strict=True):
                if tid not in entry:
                    entry[tid] = Logprob(value, rank)
            out.append(entry)
        return out

    def _layout(self, alternatives: int) -> struct.Struct:
        layout = self._layouts.get(alternatives)
        if layout is None:
            layout = self._layouts[alternatives] = struct.Struct("<" + "qdq" * (alternatives + 1))
        return layout


_TRIPLE = struct.calcsize("<qdq")
