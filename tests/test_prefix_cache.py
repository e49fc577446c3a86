"""Prefix caching in the scheduler: the index, the block accounting, and the messages the
workers apply, checked against a reference model of the workers' frames."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarathi.config import SchedulerConfig
from sarathi.core.prefix_cache import PrefixCache
from sarathi.core.scheduler import CacheCapacity, Scheduler, SchedulerStep
from sarathi.sampling_params import SamplingParams
from sarathi.sequence import Request, Sequence, SeqStatus

TPB = 4


def _request(sid: int, prompt: list[int], n: int = 1, t: float = 0.0, **kw: object) -> Request:
    params = SamplingParams(n=n, max_tokens=kw.pop("max_tokens", 3), **kw)  # type: ignore[arg-type]
    req = Request(f"r{sid}", None, list(prompt), params, arrival_time=t)
    for i in range(n):
        req.seqs.append(Sequence(sid * 10 + i, i, req, list(prompt), len(prompt)))
    return req


def _scheduler(num_blocks: int = 1000, chunk: int = 64, policy: str = "sarathi") -> Scheduler:
    cap = CacheCapacity(num_blocks=num_blocks, tokens_per_block=TPB, max_slots=64)
    return Scheduler(
        SchedulerConfig(chunk_size=chunk, scheduler=policy), cap, 4096, PrefixCache(TPB, "m")
    )


# -- the reference workers --------------------------------------------------------------------
@dataclass
class Frames:
    """What the workers' caches do with the scheduler's messages, frame by frame: every
    token written lands in the frame under its block, and a frame two owners see is never
    written."""

    num_frames: int
    slots: dict[int, list[int]] = field(default_factory=dict)  # seq id -> frames
    held: dict[int, int] = field(default_factory=dict)  # entry -> frame
    content: dict[int, list[int | None]] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.free = list(range(self.num_frames))

    def users(self, frame: int) -> int:
        return sum(f.count(frame) for f in self.slots.values()) + list(self.held.values()).count(
            frame
        )

    def _drop(self, frames: list[int]) -> None:
        for f in frames:
            if self.users(f) == 0:
                self.free.append(f)

    def apply(self, step: SchedulerStep) -> None:
        inp = step.input
        for seq_id, block, entry in inp.cache_registrations:
            frame = self.slots[seq_id][block]
            assert entry not in self.held and frame not in self.held.values()
            assert None not in self.content[frame], "a block registered before it was full"
            self.held[entry] = frame
        for entry in inp.cache_evictions:
            self._drop([self.held.pop(entry)])
        for seq_id in inp.finished + inp.preempted:
            self._drop(self.slots.pop(seq_id, []))
        for (seq, _), chunk in zip(step.chunks, inp.chunks, strict=True):
            if seq.seq_id not in self.slots:
                shared = [self.held[e] for e in inp.prefix_hits.get(seq.seq_id, [])]
                for i, f in enumerate(shared):
                    assert self.content[f] == seq.token_ids[i * TPB : (i + 1) * TPB]
                assert chunk.start == len(shared) * TPB
                self.slots[seq.seq_id] = list(shared)
            self._write(seq.seq_id, chunk.start, chunk.token_ids)
        for seq_id, pos, tok in zip(
            inp.decode_seq_ids, inp.decode_positions, inp.decode_tokens, strict=True
        ):
            self._write(seq_id, pos, [tok])
        in_use = {f for fs in self.slots.values() for f in fs} | set(self.held.values())
        assert len(in_use) + len(self.free) == self.num_frames, "a frame leaked"

    def _write(self, seq_id: int, start: int, tokens: list[int]) -> None:
        frames = self.slots[seq_id]
        for i, tok in enumerate(tokens):
            block, off = divmod(start + i, TPB)
            while len(frames) <= block:
                assert self.free, "the scheduler promised more frames than exist"
                f = self.free.pop()
                self.content[f] = [None] * TPB
                frames.append(f)
            f = frames[block]
            assert self.users(f) == 1, "a shared frame was written"
            self.content[f][off] = tok


def _account(step: SchedulerStep) -> list[Sequence]:
    """What the engine does at launch: count the tokens as computed, sample where due."""
    sampled = []
    for seq, n in step.scheduled:
        seq.num_computed += n
        if seq.num_computed == len(seq.token_ids):
            seq.token_ids.append(7 + seq.num_tokens % 5)
            sampled.append(seq)
    return sampled


def _check_accounting(s: Scheduler) -> None:
    pc = s.prefix_cache
    assert pc is not None
    used = sum(seq.num_blocks - pc.num_cached_blocks(seq) for seq in s.running)
    live_cached = {
        id(b)
        for seq in s.running
        for b in pc._seqs[seq.seq_id].cached  # noqa: SLF001
    }
    assert used + len(live_cached) + s.free_blocks == s.capacity.num_blocks
    assert s.free_blocks >= pc.num_evictable
    # Every entry a lookup can see is reachable: the block before it is cached too.
    visible = pc._index | pc._fresh  # noqa: SLF001
    assert all(b.parent is None or b.parent in visible for b in visible.values())


# -- unit behaviour ----------------------------------------------------------------------------
def test_a_shared_prompt_is_prefilled_once_and_hit_after():
    s = _scheduler()
    a = _request(0, list(range(20)), t=0.0)
    s.add(a.seqs[0])
    step = s.schedule()
    assert [n for _, n in step.scheduled] == [20]
    _account(step)
    b = _request(1, list(range(18)) + [99, 98], t=1.0)
    s.add(b.seqs[0])
    step = s.schedule()
    # 4 full blocks of a's prompt match; b computes from token 16.
    assert step.input.cache_registrations == [(0, u, u) for u in range(5)]
    assert step.input.prefix_hits == {10: [0, 1, 2, 3]}
    chunk = step.input.chunks[0]
    assert chunk.seq_id == 10 and chunk.start == 16 and len(chunk.token_ids) == 4
    assert s.prefix_cache.counters.hits == 16 and s.prefix_cache.counters.queries == 40


def test_the_block_holding_the_last_prompt_token_is_never_shared():
    s = _scheduler()
    a = _request(0, list(range(8)))
    s.add(a.seqs[0])
    _account(s.schedule())
    b = _request(1, list(range(8)), t=1.0)
    s.add(b.seqs[0])
    step = s.schedule()
    assert step.input.prefix_hits == {10: [0]}  # block 1 holds the last token: recomputed
    assert step.input.chunks[0].start == 4


def test_a_sequence_keeps_registering_past_a_block_another_one_registered_first():
    """Two requests with one 3-block prefix computed in the same step: the second's copies
    of the prefix stay private, but its own later blocks (the rest of its prompt, and its
    generated tokens once it finishes) still join the cache. Registration used to stop at
    the first duplicate, so a chat's next turn missed everything past the shared prefix."""
    s = _scheduler()
    frames = Frames(1000)
    prefix = list(range(12))
    a = _request(0, prefix + list(range(50, 59)), t=0.0, max_tokens=8)
    b = _request(1, prefix + list(range(80, 89)), t=1.0, max_tokens=8)  # 5 full blocks
    s.add(a.seqs[0])
    s.add(b.seqs[0])
    step = s.schedule()
    assert [n for _, n in step.scheduled] == [21, 21]
    while s.has_work():
        frames.apply(step)
        for seq in _account(step):
            if seq.num_output >= 8:
                s.finish(seq)
        _check_accounting(s)
        step = s.schedule()
    frames.apply(step)
    b_seq = b.seqs[0]
    assert b_seq.num_tokens == 29  # 28 computed: 7 full blocks
    c = _request(2, b_seq.token_ids + [1, 2, 3], t=2.0)
    s.add(c.seqs[0])
    step = s.schedule()
    frames.apply(step)
    # a's entries for the shared prefix, then b's own blocks 3..6: 3 and 4 of its prompt
    # (registered beside a's 0..4), 5 and 6 generated (after a's, both finishing at once).
    assert step.input.prefix_hits == {20: [0, 1, 2, 5, 6, 9, 10]}
    assert step.input.chunks[0].start == 28
    _account(step)
    s.finish(c.seqs[0])
    while s.has_work():
        frames.apply(s.schedule())
    assert s.free_blocks == 1000 and not frames.slots
    assert s.drop_cached_blocks() == len(frames.held)


def test_fingerprints_keep_caches_apart():
    a, b = PrefixCache(TPB, "base"), PrefixCache(TPB, "patched")
    seq = _request(0, list(range(8))).seqs[0]
    assert a._digests(seq, 2) != b._digests(_request(0, list(range(8))).seqs[0], 2)  # noqa: SLF001


def test_samples_of_one_request_wait_for_the_prompt_then_share_it():
    s = _scheduler(chunk=8)
    req = _request(0, list(range(13)), n=3)
    for seq in req.seqs:
        s.add(seq)
    step = s.schedule()
    assert [(x.index, n) for x, n in step.scheduled] == [(0, 8)]  # the others wait
    _account(step)
    step = s.schedule()
    assert [(x.index, n) for x, n in step.scheduled] == [(0, 5)]
    _account(step)
    step = s.schedule()  # 12 tokens (3 blocks) computed and registered: the samples share them
    assert step.input.prefix_hits == {1: [0, 1, 2], 2: [0, 1, 2]}
    assert [(x.index, n) for x, n in step.scheduled] == [(0, 1), (1, 1), (2, 1)]


def test_prompt_logprobs_skip_the_cache():
    s = _scheduler()
    a = _request(0, list(range(12)))
    s.add(a.seqs[0])
    _account(s.schedule())
    b = _request(1, list(range(12)), t=1.0, prompt_logprobs=1)
    s.add(b.seqs[0])
    step = s.schedule()
    assert not step.input.prefix_hits and step.input.chunks[0].start == 0


def test_cached_blocks_count_as_free_and_are_evicted_only_when_needed():
    s = _scheduler(num_blocks=8)
    a = _request(0, list(range(16)))
    s.add(a.seqs[0])
    _account(s.schedule())
    s.finish(a.seqs[0])
    assert s.free_blocks == 8 and s.prefix_cache.num_evictable == 4
    s.schedule()  # sends the registrations
    b = _request(1, list(range(100, 124)), t=1.0)  # 6 blocks: 2 cached ones must go
    s.add(b.seqs[0])
    step = s.schedule()
    assert len(step.input.cache_evictions) == 2
    assert s.prefix_cache.num_evictable == 2 and s.free_blocks == 2


def test_eviction_cuts_a_chain_from_its_tail_so_its_head_stays_hittable():
    """A block is reachable only through the blocks before it. A finished sequence's blocks
    used to join the LRU order head first, so the first eviction took block 0 and left the
    other three resident but unreachable (no hit, memory held for nothing)."""
    s = _scheduler(num_blocks=8)
    a = _request(0, list(range(16)))
    s.add(a.seqs[0])
    _account(s.schedule())
    s.finish(a.seqs[0])
    s.schedule()  # sends the registrations: entries 0..3
    b = _request(1, list(range(100, 120)), t=1.0)  # 5 blocks: 1 cached one must go
    s.add(b.seqs[0])
    step = s.schedule()
    assert step.input.cache_evictions == [3]
    c = _request(2, list(range(16)) + [1], t=2.0)
    assert [x.entry for x in s.prefix_cache.match(c.seqs[0])] == [0, 1, 2]


def test_evicting_a_block_drops_the_blocks_chained_after_it():
    """b's copy of the shared 3-block prefix stayed private (a registered it in the same
    step), so b's own entries hang off a's. When a's entries are evicted, b's can never be
    hit again: they used to stay cached (and held by the workers) until evicted in turn;
    now they leave the index at once and are dropped when b releases them, and b's later
    blocks are not registered under the missing parent."""
    s = _scheduler(num_blocks=16)
    frames = Frames(16)
    prefix = list(range(12))
    a = _request(0, prefix + list(range(50, 59)), t=0.0, max_tokens=1)
    b = _request(1, prefix + list(range(80, 89)), t=1.0, max_tokens=4)  # 6 full blocks
    s.add(a.seqs[0])
    s.add(b.seqs[0])
    step = s.schedule()
    frames.apply(step)
    _account(step)
    s.finish(a.seqs[0])  # a's entries 0..4 are evictable; b holds its 5 and 6
    d = _request(2, list(range(100, 132)), t=2.0, max_tokens=1)  # 8 blocks: 3 must go
    s.add(d.seqs[0])
    step = s.schedule()
    frames.apply(step)
    # a's chain from the tail: 4, 3, then 2, which takes b's 5 and 6 out of the index.
    assert step.input.cache_evictions == [4, 3, 2]
    assert s.prefix_cache.num_cached == 2 + 8  # a's 0 and 1, d's prompt
    evicted = []
    for seq in _account(step):
        if seq.num_output >= seq.params.max_tokens:
            s.finish(seq)
    while s.has_work():
        step = s.schedule()
        frames.apply(step)
        evicted += step.input.cache_evictions
        for seq in _account(step):
            if seq.num_output >= seq.params.max_tokens:
                s.finish(seq)
        _check_accounting(s)
    assert sorted(evicted) == [5, 6]  # b's, once b finished
    # Left: a's blocks 0 and 1, and d's 8; b's generated block 5 was never registered.
    held = sorted(x.entry for x in s.prefix_cache._index.values())  # noqa: SLF001
    assert sorted(frames.held) == held and len(held) == 10
    e = _request(3, prefix + list(range(80, 89)) + [1], t=3.0)
    assert [x.entry for x in s.prefix_cache.match(e.seqs[0])] == [0, 1]
    assert s.free_blocks == 16


def test_preemption_keeps_registered_blocks_cached_for_the_recompute():
    cap = CacheCapacity(num_blocks=6, tokens_per_block=TPB, max_slots=8)
    s = Scheduler(SchedulerConfig(chunk_size=64), cap, 4096, PrefixCache(TPB, "m"))
    a, b = _request(0, list(range(11)), max_tokens=20), _request(1, list(range(50, 61)), t=1.0)
    s.add(a.seqs[0])
    s.add(b.seqs[0])
    _account(s.schedule())  # 3 + 3 blocks
    _account(s.schedule())  # both decode position 11, still in block 2
    step = s.schedule()  # a's position 12 needs a 4th block: b goes
    assert [x.seq_id for x in step.preempted] == [10]
    _account(step)
    b_seq = b.seqs[0]
    assert b_seq.status is SeqStatus.WAITING
    s.finish(a.seqs[0])
    step = s.schedule()
    assert step.input.prefix_hits == {10: [2, 3]}  # b's own two full prompt blocks


def test_queries_count_the_first_lookup_of_each_sequence_only():
    """vLLM's prefix_cache_queries / hits: the prompt tokens of sequences that looked the
    cache up. A prompt-logprobs request never looks (it prefills everything), and the
    recompute after a preemption is no new query: it hits the blocks the sequence registered
    itself, which inflated the hit rate under memory pressure."""
    cap = CacheCapacity(num_blocks=6, tokens_per_block=TPB, max_slots=8)
    s = Scheduler(SchedulerConfig(chunk_size=64), cap, 4096, PrefixCache(TPB, "m"))
    counters = s.prefix_cache.counters
    a, b = _request(0, list(range(11)), max_tokens=20), _request(1, list(range(50, 61)), t=1.0)
    s.add(a.seqs[0])
    s.add(b.seqs[0])
    _account(s.schedule())
    _account(s.schedule())
    step = s.schedule()  # a's position 12 needs a 4th block: b goes
    assert [x.seq_id for x in step.preempted] == [10]
    _account(step)
    s.finish(a.seqs[0])
    step = s.schedule()
    assert step.input.prefix_hits == {10: [2, 3]}  # b's recompute hits its own blocks
    assert (counters.queries, counters.hits) == (22, 0)
    _account(step)
    s.finish(b.seqs[0])
    c = _request(2, list(range(11)), t=2.0, prompt_logprobs=1)
    s.add(c.seqs[0])
    _account(s.schedule())
    assert (counters.queries, counters.hits) == (22, 0)


# -- the property: any interleaving keeps the messages and the accounting right -----------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(["sarathi", "vllm"]))
def test_random_workloads_against_the_reference_frames(seed: int, policy: str) -> None:
    rng = random.Random(seed)
    num_blocks = rng.randint(12, 40)
    s = _scheduler(num_blocks=num_blocks, chunk=rng.choice([8, 16, 64]), policy=policy)
    frames = Frames(num_blocks)
    prefixes = [[rng.randrange(50) for _ in range(rng.randint(0, 14))] for _ in range(3)]
    live: list[Request] = []
    ops = 0
    for t in range(170):
        if rng.random() < 0.35 and len(live) < 12:
            prompt = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randint(1, 9))]
            req = _request(t, prompt, n=rng.choice([1, 1, 2, 3]), t=float(t),
                           max_tokens=rng.randint(1, 12))  # fmt: skip
            live.append(req)
            for seq in req.seqs:
                s.add(seq)
        if live and rng.random() < 0.05:  # an abort
            req = live.pop(rng.randrange(len(live)))
            for seq in req.seqs:
                if not seq.finished:
                    s.finish(seq)
        step = s.schedule()
        frames.apply(step)
        for seq in _account(step):
            if seq.num_output >= seq.params.max_tokens:
                s.finish(seq)
        live = [r for r in live if not all(x.finished for x in r.seqs)]
        _check_accounting(s)
        ops += 1
    for req in live:
        for seq in req.seqs:
            if not seq.finished:
                s.finish(seq)
    while s.has_work():
        frames.apply(s.schedule())
    assert not frames.slots
    # Nothing is held that the index does not know, and a reset drops it all.
    assert sorted(frames.held) == sorted(b.entry for b in s.prefix_cache._index.values())  # noqa: SLF001
    s.drop_cached_blocks()
    frames.apply(s.schedule())
    assert not frames.held and s.prefix_cache.num_cached == 0
    assert ops == 170


@pytest.mark.parametrize("policy", ["sarathi", "vllm"])
def test_every_block_comes_back(policy: str) -> None:
    s = _scheduler(num_blocks=20, chunk=8, policy=policy)
    frames = Frames(20)
    reqs = [_request(i, list(range(10)) + [i], n=2, t=float(i), max_tokens=5) for i in range(4)]
    for r in reqs:
        for seq in r.seqs:
            s.add(seq)
    while s.has_work():
        step = s.schedule()
        frames.apply(step)
        for seq in _account(step):
            if seq.num_output >= 5:
                s.finish(seq)
        _check_accounting(s)
    assert s.free_blocks == 20 and not frames.slots
    assert len(frames.free) + len(frames.held) == 20
