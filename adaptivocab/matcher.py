"""Split removed tokens and merge n-grams, longest match first, in one pass.

Two implementations of the same rule: a plain Python walk for short inputs
(a chat prompt: numpy's per-call overhead would dominate) and a vectorised
numpy version for long inputs and batches. Tests check they agree.

The numpy version finds, for every position, the longest n-gram starting
there (one trie level per step, over all positions at once), then resolves
the left-to-right greedy choice. Positions that no match can skip over are
"sync points" and are certainly emitted; walkers start at every sync point
and advance in lock step until they land on the next sync point, so the
sequential part only runs over stretches of overlapping candidate matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Below this many tokens the Python walk is faster than numpy's fixed costs.
_PY_THRESHOLD = 256


class NgramMatcher:
    """Rewrites base-token ids into patched ids (see module docstring)."""

    def __init__(
        self,
        vocab_size: int,
        removed: Mapping[int, Sequence[int]],
        ngrams: Mapping[int, Sequence[int]],
    ) -> None:
        self.vocab_size = vocab_size
        self.max_len = max((len(p) for p in ngrams.values()), default=1)
        self._removed = {int(k): tuple(int(x) for x in v) for k, v in removed.items()}
        self._table = {tuple(int(x) for x in v): int(k) for k, v in ngrams.items()}
        self._starts = frozenset(p[0] for p in self._table)
        self._build_split_tables()
        self._build_trie()

    # -- tables -------------------------------------------------------------
    def _build_split_tables(self) -> None:
        v = self.vocab_size
        lens = np.ones(v + 1, dtype=np.int64)
        for rid, pieces in self._removed.items():
            lens[rid] = len(pieces)
        starts = np.zeros(v + 1, dtype=np.int64)
        starts[1:] = np.cumsum(lens)[:-1]
        flat = np.arange(v + 1, dtype=np.int64).repeat(lens)
        for rid, pieces in self._removed.items():
            flat[starts[rid] : starts[rid] + len(pieces)] = pieces
        self._piece_len, self._piece_start, self._piece_flat = lens, starts, flat

    def _build_trie(self) -> None:
        # Node ids: 0..V-1 are the one-token prefixes, V is the sequence
        # separator (never a prefix), deeper nodes are numbered from V+1.
        v = self.vocab_size
        self._stride = v + 1
        children: dict[int, int] = {}
        terminal: dict[int, int] = {}
        next_node = v + 1
        for pieces, new_id in self._table.items():
            node = pieces[0]
            for tok in pieces[1:]:
                key = node * self._stride + tok
                child = children.get(key)
                if child is None:
                    child = next_node
                    next_node += 1
                    children[key] = child
                node = child
            terminal[node] = new_id
        keys = np.fromiter(children.keys(), dtype=np.int64, count=len(children))
        vals = np.fromiter(children.values(), dtype=np.int64, count=len(children))
        order = np.argsort(keys)
        self._keys, self._children = keys[order], vals[order]
        term = np.full(next_node, -1, dtype=np.int64)
        for node, new_id in terminal.items():
            term[node] = new_id
        self._terminal = term

    # -- public -------------------------------------------------------------
    def apply(self, ids: Sequence[int]) -> list[int]:
        """Patched ids for one base-token sequence."""
        if len(ids) < _PY_THRESHOLD:
            return self._apply_py(ids)
        flat = np.asarray(ids, dtype=np.int64)
        out, _ = self.apply_flat(flat, np.array([flat.size], dtype=np.int64))
        return out.tolist()

    def apply_batch(self, seqs: Sequence[Sequence[int]]) -> list[list[int]]:
        """Patched ids for many sequences (n-grams never span two sequences)."""
        total = sum(len(s) for s in seqs)
        if total < _PY_THRESHOLD * 4:
            return [self._apply_py(s) for s in seqs]
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=total)
        out, out_len = self.apply_flat(flat, lengths)
        parts = out.tolist()
        bounds = np.concatenate(([0], np.cumsum(out_len))).tolist()
        return [parts[bounds[i] : bounds[i + 1]] for i in range(len(seqs))]

    def split_flat(self, flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Replace removed tokens by their surviving pieces (no n-gram merging)."""
        lens = self._piece_len[flat]
        if flat.size == 0 or int(lens.max()) == 1:
            return flat, lengths
        total = int(lens.sum())
        first = np.repeat(self._piece_start[flat], lens)
        offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        out = self._piece_flat[first + offs]
        cs = np.concatenate(([0], np.cumsum(lens)))
        ends = np.cumsum(lengths)
        new_lengths = cs[ends] - cs[ends - lengths]
        return out, new_lengths

    def longest_matches(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each position: length of the longest n-gram starting there (1 if none) and its id."""
        n = arr.size
        match_len = np.ones(n, dtype=np.int64)
        match_id = np.full(n, -1, dtype=np.int64)
        if self.max_len < 2 or n == 0 or self._keys.size == 0:
            return match_len, match_id
        pos = np.flatnonzero(arr < self.vocab_size)
        state = arr[pos]
        for k in range(2, self.max_len + 1):
            nxt = pos + (k - 1)
            ok = nxt < n
            pos, state, nxt = pos[ok], state[ok], nxt[ok]
            keys = state * self._stride + arr[nxt]
            idx = np.searchsorted(self._keys, keys)
            idx[idx >= self._keys.size] = 0
            found = self._keys[idx] == keys
            pos, state = pos[found], self._children[idx[found]]
            if pos.size == 0:
                break
            term = self._terminal[state]
            hit = term >= 0
            match_len[pos[hit]] = k
            match_id[pos[hit]] = term[hit]
        return match_len, match_id

    def pad(self, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Concatenated sequences with a separator (id == vocab_size) after each one."""
        nseq = lengths.size
        seq_of = np.repeat(np.arange(nseq, dtype=np.int64), lengths)
        arr = np.full(flat.size + nseq, self.vocab_size, dtype=np.int64)
        arr[np.arange(flat.size, dtype=np.int64) + seq_of] = flat
        return arr

    def resolve(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy longest-first segmentation of a padded array.

        Returns ``(emitted, match_len, match_id)``: ``emitted[i]`` is True where
        a token (a base token or an n-gram starting there) is output.
        """
        match_len, match_id = self.longest_matches(arr)
        n = arr.size
        sync = np.ones(n, dtype=bool)
        for k in range(1, self.max_len):
            sync[k:] &= ~(match_len[:-k] > k)
        on = sync.copy()
        # A sync point without a match steps onto the next position, which is
        # then a sync point too, so only matches start walkers.
        cur = np.flatnonzero(sync & (match_len > 1))
        while cur.size:
            cur = cur + match_len[cur]
            cur = cur[cur < n]
            cur = cur[~sync[cur]]
            on[cur] = True
        return on, match_len, match_id

    def apply_flat(self, flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised core: concatenated sequences in, concatenated patched sequences out."""
        flat, lengths = self.split_flat(
            np.asarray(flat, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        )
        if flat.size == 0 or self.max_len < 2:
            return flat, lengths
        arr = self.pad(flat, lengths)
        on, match_len, match_id = self.resolve(arr)
        keep = on & (arr != self.vocab_size)
        out = np.where(match_len > 1, match_id, arr)[keep]
        seq_of_padded = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths + 1)
        out_len = np.bincount(seq_of_padded[keep], minlength=lengths.size).astype(np.int64)
        return out, out_len

    # -- reference walk -----------------------------------------------------
    def _apply_py(self, ids: Sequence[int]) -> list[int]:
        removed = self._removed
        if removed and not removed.keys().isdisjoint(ids):
            ids = [p for t in ids for p in removed.get(t, (t,))]
        elif not isinstance(ids, list):
            ids = list(ids)
        starts, table, maxn = self._starts, self._table, self.max_len
        out: list[int] = []
        append = out.append
        i, n = 0, len(ids)
        while i < n:
            t = ids[i]
            if t in starts:
                for k in range(min(maxn, n - i), 1, -1):
                    new_id = table.get(tuple(ids[i : i + k]))
                    if new_id is not None:
                        append(new_id)
                        i += k
                        break
                else:
                    append(t)
                    i += 1
            else:
                append(t)
                i += 1
        return out
