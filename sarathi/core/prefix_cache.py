"""The scheduler's index of computed KV blocks, for automatic prefix caching.

A *full* block of a sequence (``tokens_per_block`` tokens whose K/V are computed) is named by
a hash chain: the digest of block ``u`` covers the digest of block ``u - 1`` and the block's
token ids, and the chain starts from a seed that fingerprints the model and tokenizer (a
base-vocabulary prompt and a patched one never match). A new sequence whose leading block
digests are in the index gets those blocks' frames mapped at the start of its slot (the
workers' caches alias the physical memory, they copy nothing) and prefills only the rest.

The index lives here, beside the scheduler's block accounting, so that one place decides
both what is shared and what that costs; the workers only learn *entry* numbers: which of
a sequence's blocks to keep as entry ``e`` (``StepInput.cache_registrations``), which
entries to drop (``cache_evictions``) and which entries a new slot starts with
(``prefix_hits``). Every rank applies the same messages, so ranks agree without talking.

Reference counts are per entry and count the *live sequences* using it. An entry no live
sequence uses stays cached (its frame keeps its contents) and is evictable, least recently
used first; the scheduler counts evictable entries as free blocks and evicts only when it
needs their memory, so a cache entry never costs a request its admission or a preemption.

An entry is only reachable through its parent (the entry of the block before it: a lookup
walks the chain from the first block), so eviction keeps chains whole, as vLLM and SGLang
do. A released sequence's blocks join the LRU order tail first, so that a chain is cut back
from its end and its head stays hittable. And evicting an entry also drops every entry
chained after it, which no lookup could reach any more: the evictable ones go at once, the
ones live sequences still use (a sequence whose copy of the head stayed private) leave the
index and go when their last user releases them. No entry is ever registered under a parent
that is not cached, so every entry in the index can be hit.

When is a block registered? When the scheduler sends the chunk that completes it (the step
that writes it runs before any later step that could read it), and, for blocks of generated
tokens, when the sequence finishes (only then are all their token values known on the
host). A registration reaches the workers with the next step, and only then can another
sequence hit it. Two sequences computing the same block in one step (neither could hit the
other's copy yet) both keep going: the first to register it makes the entry, the other's
copy stays private and its later blocks still become entries, so a sequence's entries need
not be a prefix of its slot (a new slot's hits always are).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from sarathi.sequence import Sequence


@dataclass(eq=False)
class CachedBlock:
    """One computed full block in the index."""

    entry: int  # the number the workers know it by
    digest: bytes
    parent: bytes | None  # the digest of the block before it; None for a first block
    refs: int = 0  # live sequences whose slot starts with it
    sent: bool = False  # the workers got its registration (and hold its frame)
    detached: bool = False  # out of the index (its parent was evicted): dropped at refs 0


@dataclass
class PrefixCacheCounters:
    """Prompt tokens looked up and found at a first admission (vLLM's queries and hits), and
    cached blocks dropped: evicted to make room or by a reset, or dropped with the entry
    they were chained after (at once, or when their last user releases them)."""

    queries: int = 0
    hits: int = 0
    evictions: int = 0


@dataclass
class _SeqBlocks:
    """What the index keeps per sequence: the digests of its known full blocks, the cached
    blocks its slot holds (the hits it started with, then the blocks it registered itself),
    and how many of its leading blocks registration has passed.

    ``cached`` need not be a prefix of the slot: a block whose digest another sequence
    registered first (both computed it in one step) stays this sequence's private copy,
    and its later blocks still become entries (the chain names tokens, not copies)."""

    digests: list[bytes] = field(default_factory=list)
    cached: list[CachedBlock] = field(default_factory=list)
    passed: int = 0  # blocks [0, passed) are hits, entries or private duplicates


class PrefixCache:
    def __init__(self, tokens_per_block: int, fingerprint: str) -> None:
        self.tokens_per_block = tokens_per_block
        self._root = hashlib.blake2b(fingerprint.encode(), digest_size=16).digest()
        self._index: dict[bytes, CachedBlock] = {}  # visible to lookups
        self._fresh: dict[bytes, CachedBlock] = {}  # registered this step, not sent yet
        self._unsent: list[tuple[int, int, int]] = []  # (seq id, block, entry)
        self._evictable: OrderedDict[int, CachedBlock] = OrderedDict()  # refs 0, LRU first
        # parent digest -> the indexed (or fresh) entries chained after it, by digest
        self._children: dict[bytes, dict[bytes, CachedBlock]] = {}
        self._evicted: list[int] = []  # entries the workers must drop, for the next step
        self._seqs: dict[int, _SeqBlocks] = {}
        self._entries = itertools.count()
        self.counters = PrefixCacheCounters()

    # -- what the scheduler reads ------------------------------------------------------------
    @property
    def num_evictable(self) -> int:
        """Cached blocks no live sequence uses: free for the scheduler, evicted on demand."""
        return len(self._evictable)

    @property
    def has_unsent(self) -> bool:
        """Registrations or evictions the workers have not been told of yet."""
        return bool(self._unsent or self._evicted)

    @property
    def num_cached(self) -> int:
        return len(self._index) + len(self._fresh)

    @property
    def num_sequences(self) -> int:
        """Sequences whose blocks the cache follows: none once every request has finished."""
        return len(self._seqs)

    def num_cached_blocks(self, seq: Sequence) -> int:
        """Blocks of ``seq``'s slot that are cache entries (counted by the cache, not by the
        sequence); its hits lead, its own entries may follow a private duplicate."""
        blocks = self._seqs.get(seq.seq_id)
        return len(blocks.cached) if blocks else 0

    # -- admission ---------------------------------------------------------------------------
    def match(self, seq: Sequence) -> list[CachedBlock]:
        """The cached blocks a sequence about to be admitted can start with: the longest
        run of its leading block digests in the index. At least one token is left to
        compute (the step must produce the logits of the last one), so a block holding the
        last token is never shared; the boundary block is recomputed, never written shared."""
        limit = (seq.num_tokens - 1) // self.tokens_per_block
        digests = self._digests(seq, limit)
        hits: list[CachedBlock] = []
        for d in digests[:limit]:
            block = self._index.get(d)
            if block is None:
                break
            hits.append(block)
        return hits

    def acquire(self, seq: Sequence, hits: list[CachedBlock]) -> int:
        """``seq``'s slot starts with ``hits``; returns how many of them were evictable
        (and so now cost the scheduler a block each)."""
        blocks = self._seqs.setdefault(seq.seq_id, _SeqBlocks())
        assert not blocks.cached, "a sequence acquires its prefix once per admission"
        revived = 0
        for b in hits:
            if b.refs == 0:
                self._evictable.pop(b.entry)
                revived += 1
            b.refs += 1
        blocks.cached = list(hits)
        blocks.passed = len(hits)
        return revived

    def count_lookup(self, seq: Sequence, hits: int) -> None:
        self.counters.queries += seq.num_tokens
        self.counters.hits += hits * self.tokens_per_block

    # -- registration ------------------------------------------------------------------------
    def register(self, seq: Sequence, num_tokens: int) -> None:
        """Make ``seq``'s full blocks within its first ``num_tokens`` tokens cache entries,
        from the first one registration has not passed yet. A block another sequence
        registered first (both computed it in one step: a burst behind one system prompt, or
        the last prompt block of an ``n > 1`` sample) stays this one's private copy, freed
        with its slot like any uncached block; the blocks after it are still registered, as
        vLLM keeps caching past a duplicate block. A later lookup then maps the first
        owner's entry for that block and this sequence's entries after it."""
        blocks = self._seqs.setdefault(seq.seq_id, _SeqBlocks())
        full = min(num_tokens, seq.num_tokens) // self.tokens_per_block
        if full <= blocks.passed:
            return
        digests = self._digests(seq, full)
        for u in range(blocks.passed, full):
            d = digests[u]
            if d in self._index or d in self._fresh:
                continue
            parent = digests[u - 1] if u else None
            if parent is not None and parent not in self._index and parent not in self._fresh:
                # The block before it was evicted: no lookup could reach this one, nor the
                # ones after it (the chain stays cut), so they stay private.
                break
            block = CachedBlock(next(self._entries), d, parent, refs=1)
            self._fresh[d] = block
            if parent is not None:
                self._children.setdefault(parent, {})[d] = block
            self._unsent.append((seq.seq_id, u, block.entry))
            blocks.cached.append(block)
        blocks.passed = full

    def take_registrations(self) -> list[tuple[int, int, int]]:
        """The registrations for the next step's message; they become visible to lookups
        now (the step carrying them runs before any step that reads them)."""
        for block in self._fresh.values():
            block.sent = True
        self._index.update(self._fresh)
        self._fresh.clear()
        out, self._unsent = self._unsent, []
        return out

    def take_evictions(self) -> list[int]:
        """The entries the workers must drop, for the next step's message."""
        out, self._evicted = self._evicted, []
        return out

    # -- release and eviction ----------------------------------------------------------------
    def release(self, seq: Sequence, keep_digests: bool) -> tuple[int, int]:
        """``seq`` no longer holds its slot. Returns (cached blocks it held, of which now
        free: evictable, or dropped because they were detached). ``keep_digests``: the
        sequence will be admitted again (a preemption)."""
        blocks = self._seqs.get(seq.seq_id)
        if blocks is None:
            return 0, 0
        freed = 0
        dropped: set[int] = set()
        # Tail first, as vLLM frees blocks: the LRU order then evicts a chain's later
        # blocks before its head, which every longer prefix needs.
        for b in reversed(blocks.cached):
            b.refs -= 1
            if b.refs == 0:
                freed += 1
                if b.detached:
                    self._drop(b, dropped)
                else:
                    self._evictable[b.entry] = b
        self._forget_unsent(dropped)
        held = len(blocks.cached)
        blocks.cached = []
        blocks.passed = 0
        if not keep_digests:
            del self._seqs[seq.seq_id]
        return held, freed

    def evict(self, n: int) -> int:
        """Drop at least ``min(n, num_evictable)`` evictable entries, least recently
        released first, each with the entries chained after it (unreachable without it);
        returns how many entries were dropped. The workers learn the ones they know from
        ``take_evictions``; one never sent is just forgotten."""
        dropped: set[int] = set()
        count = 0
        while count < n and self._evictable:
            _, b = self._evictable.popitem(last=False)
            count += self._cut(b, dropped)
        self._forget_unsent(dropped)
        return count

    def _cut(self, root: CachedBlock, dropped: set[int]) -> int:
        """Take ``root`` (evictable) and every entry chained after it out of the index;
        drop those no live sequence uses, and detach the others (dropped when released).
        Returns how many were dropped now."""
        parent = root.parent
        if parent is not None:
            siblings = self._children[parent]
            del siblings[root.digest]
            if not siblings:
                del self._children[parent]
        count = 0
        stack = [root]
        while stack:
            b = stack.pop()
            del (self._index if b.sent else self._fresh)[b.digest]
            stack.extend(self._children.pop(b.digest, {}).values())
            if b.refs == 0:
                self._evictable.pop(b.entry, None)
                self._drop(b, dropped)
                count += 1
            else:
                b.detached = True
                if not b.sent:  # its frame stays the slot's own: the workers never hold it
                    dropped.add(b.entry)
        return count

    def _drop(self, b: CachedBlock, dropped: set[int]) -> None:
        """Forget ``b`` (refs 0, out of the index): the workers release its frame, or, if
        its registration was never sent, never hold it (``dropped`` collects those)."""
        self.counters.evictions += 1
        if b.sent:
            self._evicted.append(b.entry)
        else:
            dropped.add(b.entry)

    def _forget_unsent(self, dropped: set[int]) -> None:
        if dropped:
            self._unsent = [r for r in self._unsent if r[2] not in dropped]

    # -- hashing -----------------------------------------------------------------------------
    def _salted_root(self, salt: str | None) -> bytes:
        if salt is None:
            return self._root
        return hashlib.blake2b(self._root + salt.encode(), digest_size=16).digest()

    def _digests(self, seq: Sequence, count: int) -> list[bytes]:
        """Digests of ``seq``'s first ``count`` full blocks (memoized per sequence: prompts
        never change, and generated tokens only join once known)."""
        blocks = self._seqs.setdefault(seq.seq_id, _SeqBlocks())
        out = blocks.digests
        tpb = self.tokens_per_block
        count = min(count, seq.num_tokens // tpb)
        if len(out) < count:
            tokens = np.asarray(seq.token_ids[len(out) * tpb : count * tpb], dtype=np.int64)
            parent = out[-1] if out else self._salted_root(seq.request.cache_salt)
            for row in tokens.reshape(-1, tpb):
                parent = hashlib.blake2b(parent + row.tobytes(), digest_size=16).digest()
                out.append(parent)
        return out
