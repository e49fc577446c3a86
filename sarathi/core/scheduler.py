"""Which sequences run in the next step, and how many tokens each.

``sarathi`` (Sarathi-Serve's stall-free batching): one token budget per step; running decodes
first (one token each), then the unfinished prefill chunks, then new requests in queue
order while the budget, the slots and the KV blocks allow. A long prompt is prefilled in
chunks across steps, mixed with the decodes of the others.

``vllm`` (the baseline): whenever a waiting prompt fits, the step is whole prefills only and
the running decodes wait; otherwise a step of decodes.

KV memory is counted in blocks (``tokens_per_block`` tokens of one slot in every layer; see
the glossary in docs/architecture.md). When a running sequence cannot grow, the
latest-queued running sequence is preempted: its blocks are freed and it returns to the
queue, ahead of everything queued after it, to be recomputed.
No sequence is ever dropped.

Queue order is by turn (``core/waiting_queue.py``): requests take turns by client (the
server's API key or the caller's address), so one client's flood does not hold another's
request behind it; with one client, turns are arrival order. The scheduling policy
(``--scheduling-policy``, vLLM's) orders both queues. ``fcfs``: by turn, as above.
``priority``: the request's priority (lower first), then turn; running sequences are
served in that order and the one preempted when a running sequence cannot grow is the
latest of the worst priority. A waiting sequence, and a running one whose next prompt
chunk does not fit, also preempt running sequences of a strictly worse priority (worst
first) until their chunk fits, or for a slot when every slot is taken; never one of an
equal or better priority. After a preemption a step admits only sequences of a better
priority than every sequence it preempted, so a victim is not admitted back in the step
that preempted it.

With prefix caching (``core/prefix_cache.py``) a sequence admitted with cached leading blocks
starts with them and prefills only the rest; a cached block is counted once however many
sequences share it, and cached blocks no one uses count as free (they are evicted, least
recently used first, when their memory is needed). The samples of an ``n > 1`` request
wait for the first one's prompt, then share it.
"""

from __future__ import annotations

import bisect
import contextlib
from dataclasses import dataclass, field

from sarathi.config import SchedulerConfig
from sarathi.core.prefix_cache import CachedBlock, PrefixCache
from sarathi.core.scheduler_output import NewSequence, ScheduledChunk, StepInput
from sarathi.core.waiting_queue import Turns, queue_order
from sarathi.sequence import SeqStatus, Sequence


@dataclass
class SchedulerStep:
    """One step's plan: ``input`` for the workers, and the sequences behind it."""

    input: StepInput
    decodes: list[Sequence] = field(default_factory=list)  # one token each
    chunks: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, tokens)
    preempted: list[Sequence] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)  # seq ids scheduled
    hits: dict[int, list[int]] = field(default_factory=dict)  # admitted with cached blocks

    def add_chunk(self, seq: Sequence, n: int) -> None:
        self.chunks.append((seq, n))
        self.ids.add(seq.seq_id)

    def drop(self, seq: Sequence) -> None:
        if seq.seq_id in self.ids:
            self.ids.discard(seq.seq_id)
            self.decodes = [s for s in self.decodes if s is not seq]
            self.chunks = [(s, n) for s, n in self.chunks if s is not seq]

    @property
    def scheduled(self) -> list[tuple[Sequence, int]]:
        """(sequence, tokens) in the order the workers see them: decodes, then chunks."""
        return [(s, 1) for s in self.decodes] + self.chunks

    @property
    def empty(self) -> bool:
        return not self.decodes and not self.chunks


@dataclass(frozen=True)
class CacheCapacity:
    """What the KV cache can hold; computed once and passed to the scheduler."""

    num_blocks: int
    tokens_per_block: int
    max_slots: int

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.tokens_per_block)

    @property
    def max_tokens(self) -> int:
        return self.num_blocks * self.tokens_per_block


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        capacity: CacheCapacity,
        max_model_len: int,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        if config.chunk_size is None:
            raise ValueError(
                "the scheduler needs a resolved chunk_size (the engine resolves "
                "the default by GPU class)"
            )
        self.config = config
        self.chunk_size: int = config.chunk_size
        self.capacity = capacity
        self.max_model_len = max_model_len
        self.max_running = min(config.max_num_seqs, capacity.max_slots)
        # The running list is sorted by _order: turn, or (priority, turn).
        self.waiting, self._order = queue_order(config.scheduling_policy)
        self.turns = Turns()
        self._by_priority = config.scheduling_policy == "priority"
        self.running: list[Sequence] = []
        # Blocks no running sequence holds; cached blocks no one uses are among them.
        self.free_blocks = capacity.num_blocks
        self.prefix_cache = prefix_cache
        self._to_forget: list[int] = []

    # -- queue management ------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """Queue a new sequence; a request's samples are added together, first one first."""
        self.turns.add(seq)
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Release a finished or aborted sequence wherever it is."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING:
            with contextlib.suppress(ValueError):
                self.waiting.remove(seq)
            self.turns.withdrawn(seq)
        if self.prefix_cache is not None:
            # Every token is known now: the blocks of generated tokens join the cache too
            # (a chat's next turn resends them).
            self.prefix_cache.register(seq, seq.num_computed)
        self._release_blocks(seq, again=False)
        seq.status = SeqStatus.FINISHED
        if seq.sent_to_worker:
            self._to_forget.append(seq.seq_id)

    def drop_cached_blocks(self) -> int:
        """Evict every cached block no running sequence uses; returns how many (they were
        counted free already, so no accounting changes)."""
        pc = self.prefix_cache
        if pc is None:
            return 0
        return pc.evict(pc.num_evictable)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        """Sequences to run, or messages the workers are owed (slots to free, cache entries
        to make or drop)."""
        pc = self.prefix_cache
        return bool(
            self.waiting or self.running or self._to_forget or (pc is not None and pc.has_unsent)
        )

    # -- one step --------------------------------------------------------------------------
    def schedule(self) -> SchedulerStep:
        step = SchedulerStep(StepInput())
        pc = self.prefix_cache
        if pc is not None:
            # Before admission: what was registered last step is visible from this one on.
            step.input.cache_registrations = pc.take_registrations()
        if self.config.scheduler == "vllm":
            self._schedule_vllm(step)
        else:
            self._schedule_sarathi(step)
        inp = step.input
        inp.finished = self._to_forget
        self._to_forget = []
        if pc is not None:
            inp.cache_evictions = pc.take_evictions()
            for seq, n in step.chunks:
                pc.register(seq, seq.num_computed + n)
            inp.prefix_hits = {i: e for i, e in step.hits.items() if i in step.ids}
        inp.preempted = [s.seq_id for s in step.preempted if s.sent_to_worker]
        # Decodes are sequences the workers know (they prefilled there).
        inp.decode_seq_ids = [s.seq_id for s in step.decodes]
        inp.decode_positions = [s.num_computed for s in step.decodes]
        inp.decode_tokens = [s.token_ids[-1] for s in step.decodes]
        for seq, n in step.chunks:
            if not seq.sent_to_worker:
                seq.sent_to_worker = True
                inp.new_sequences.append(
                    NewSequence(seq.seq_id, seq.params, seq.prompt_len, _seed(seq))
                )
            start = seq.num_computed
            tokens = seq.token_ids[start : start + n]
            head = None
            if seq.seq_id in step.hits and seq.params.needs_history:
                head = seq.token_ids[:start]
            inp.chunks.append(
                ScheduledChunk(
                    seq.seq_id,
                    start,
                    tokens,
                    start + n == len(seq.token_ids),
                    *_prompt_logprobs(seq, start, n),
                    history_head=head,
                )
            )
        return step

    def _schedule_sarathi(self, step: SchedulerStep) -> None:
        budget = self.chunk_size
        while True:
            budget = self._schedule_decodes(step, budget)
            for seq in list(self.running):
                if budget <= 0:
                    break
                if (
                    seq.remaining > 1
                    and seq.seq_id not in step.ids
                    and seq.status is SeqStatus.RUNNING  # not preempted by an earlier one
                ):
                    want = min(seq.remaining, budget)
                    n = self._fit(seq, want)
                    if n < want and self._by_priority:
                        budget += self._make_room(seq, want, step)
                        n = self._fit(seq, want)
                    if n:
                        self._grow(seq, seq.num_computed + n)
                        step.add_chunk(seq, n)
                        budget -= n
            # After a preemption, admitting work would only thrash: the freed blocks are for
            # the running sequences (under priority: for those and for better priorities
            # than the preempted ones', see _admit).
            if not step.preempted or not self.running or self._by_priority:
                budget = self._admit(step, budget, whole=False)
            # Deadlock guard: partial prefills can hold every block while none can grow.
            if not step.empty or not self._stuck():
                return
            self._preempt(self.running[-1], step)

    def _schedule_vllm(self, step: SchedulerStep) -> None:
        budget = max(self.chunk_size, self.max_model_len)
        self._admit(step, budget, whole=True)
        if not step.empty:
            return
        while True:
            self._schedule_decodes(step, len(self.running))
            # Prefills interrupted by preemption resume here, whole.
            for seq in list(self.running):
                if (
                    seq.remaining > 1
                    and seq.seq_id not in step.ids
                    and self._fit(seq, seq.remaining) == seq.remaining
                ):
                    self._grow(seq, seq.num_tokens)
                    step.add_chunk(seq, seq.remaining)
            if not step.empty or not self._stuck():
                return
            self._preempt(self.running[-1], step)

    def _stuck(self) -> bool:
        """After an empty step: whether running sequences are blocked on memory. Not when
        none has a token to compute: with overlap, sequences whose last token is in flight
        wait for it to finish them, and preempting one dropped a finished sequence back in
        the queue (its generated blocks never cached, its prompt recomputed for nothing).
        Only reached on an empty step, so the scan stays off the per-step path."""
        return any(s.num_computed < len(s.token_ids) for s in self.running)

    def _schedule_decodes(self, step: SchedulerStep, budget: int) -> int:
        # The hot loop of a decode-heavy engine: plain attribute arithmetic only.
        tpb = self.capacity.tokens_per_block
        ids = step.ids
        decodes = step.decodes
        running = SeqStatus.RUNNING
        for seq in list(self.running):
            if budget <= 0:
                break
            nc = seq.num_computed
            if seq.status is not running or len(seq.token_ids) - nc != 1 or seq.seq_id in ids:
                continue
            need = nc + 1
            if need > seq.num_blocks * tpb:
                while self._blocks_short(seq, need) > 0:
                    victim = self.running[-1]
                    self._preempt(victim, step)
                    if victim is seq:
                        break
                decodes = step.decodes  # a preemption rebuilds the list
                if seq.status is not running:
                    continue
                self._grow(seq, need)
            decodes.append(seq)
            ids.add(seq.seq_id)
            budget -= 1
        return budget

    def _admit(self, step: SchedulerStep, budget: int, whole: bool) -> int:
        # Under priority, after a preemption: the priority a sequence must be better than to
        # be admitted (the preempted ones' best), so no victim comes back in this step.
        floor = None
        if self._by_priority and step.preempted and self.running:
            floor = min(s.request.priority for s in step.preempted)
        i = 0
        while i < len(self.waiting) and budget > 0:
            full = len(self.running) >= self.max_running
            if full and not self._by_priority:
                break
            seq = self.waiting[i]
            if floor is not None and seq.request.priority >= floor:
                break  # the queue is in priority order: no later one is better
            if self._waits_for_sibling(seq):
                i += 1
                continue
            if full:
                victim = self._victim_for(seq)
                if victim is None:
                    break
                budget += self._preempt(victim, step)
                floor = _lower(floor, victim.request.priority)
            hits = self._start_with_cache(seq)
            want = seq.remaining
            chunk = min(want, budget)
            n = 0 if whole and want > budget else self._fit(seq, chunk)
            if n < chunk and self._by_priority and not (whole and want > budget):
                # Victims are worse than seq, so they queue behind it: waiting[i] stays seq.
                preempted = len(step.preempted)
                budget += self._make_room(seq, chunk, step)
                if len(step.preempted) > preempted:
                    floor = _lower(floor, step.preempted[-1].request.priority)
                n = self._fit(seq, chunk)
            if n == 0 or (whole and n < want):
                if hits:
                    self._release_blocks(seq, again=True)
                    seq.num_computed = 0
                break
            del self.waiting[i]
            self.turns.admitted(seq)
            seq.status = SeqStatus.RUNNING
            bisect.insort(self.running, seq, key=self._order)
            self._grow(seq, seq.num_computed + n)
            step.add_chunk(seq, n)
            if hits:
                step.hits[seq.seq_id] = [b.entry for b in hits]
                if seq.index == 0 and seq.request.metrics.first_scheduled_time is None:
                    seq.request.num_cached_tokens = seq.num_computed
            if (
                self.prefix_cache is not None
                and seq.params.prompt_logprobs is None
                and not seq.sent_to_worker
            ):
                # As vLLM counts queries: only real lookups (prompt logprobs skip the cache)
                # at a sequence's first admission (a recompute after a preemption hits the
                # blocks it registered itself, which would inflate the hit rate).
                self.prefix_cache.count_lookup(seq, len(hits))
            budget -= n
        return budget

    def _start_with_cache(self, seq: Sequence) -> list[CachedBlock]:
        """Give a sequence about to be admitted the cached blocks its tokens start with."""
        pc = self.prefix_cache
        # Prompt logprobs need every prompt row's logits: nothing can be skipped.
        if pc is None or seq.params.prompt_logprobs is not None:
            return []
        hits = pc.match(seq)
        if hits:
            self.free_blocks -= pc.acquire(seq, hits)
            seq.num_blocks = len(hits)
            seq.num_computed = len(hits) * self.capacity.tokens_per_block
        return hits

    def _waits_for_sibling(self, seq: Sequence) -> bool:
        """Whether a later sample of an ``n > 1`` request should wait for the first to
        compute the prompt's full blocks, so that it can share them instead."""
        if self.prefix_cache is None or seq.index == 0 or seq.params.prompt_logprobs is not None:
            return False
        first = seq.request.seqs[0]
        shareable = (first.prompt_len - 1) // self.capacity.tokens_per_block
        shareable *= self.capacity.tokens_per_block
        return first.status is SeqStatus.RUNNING and first.num_computed < shareable

    # -- KV accounting ---------------------------------------------------------------------
    def _blocks_short(self, seq: Sequence, num_tokens: int) -> int:
        need = self.capacity.blocks_for(num_tokens) - seq.num_blocks
        return need - self.free_blocks

    def _fit(self, seq: Sequence, n: int) -> int:
        """Largest m <= n such that tokens up to num_computed + m fit in the free blocks."""
        tpb = self.capacity.tokens_per_block
        limit = (seq.num_blocks + self.free_blocks) * tpb - seq.num_computed
        return max(0, min(n, limit))

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        need = self.capacity.blocks_for(num_tokens) - seq.num_blocks
        if need > 0:
            assert need <= self.free_blocks, "scheduler over-committed the KV cache"
            pc = self.prefix_cache
            if pc is not None:
                short = need - (self.free_blocks - pc.num_evictable)
                if short > 0:
                    pc.evict(short)
            self.free_blocks -= need
            seq.num_blocks += need

    def _release_blocks(self, seq: Sequence, again: bool) -> None:
        """Give back the blocks ``seq`` holds; ``again``: it will be admitted again."""
        held = freed = 0
        if self.prefix_cache is not None:
            held, freed = self.prefix_cache.release(seq, keep_digests=again)
        # Its own blocks, and the cached ones it was the last to use (now evictable).
        self.free_blocks += seq.num_blocks - held + freed
        seq.num_blocks = 0

    def _victim_for(self, seq: Sequence) -> Sequence | None:
        """Under priority: the running sequence to preempt for ``seq``, the latest of the
        worst priority, if that is strictly worse than seq's; else None (and always under
        fcfs). One whose tokens are all computed is passed over: its last token is in
        flight and ends it, freeing its blocks anyway."""
        if not self._by_priority:
            return None
        mine = seq.request.priority
        for victim in reversed(self.running):
            if victim.request.priority <= mine:
                return None
            if victim.remaining > 0:
                return victim
        return None

    def _make_room(self, seq: Sequence, n: int, step: SchedulerStep) -> int:
        """Preempt running sequences of a worse priority than ``seq``'s, worst first, until
        ``n`` more of its tokens fit; returns the step's budget they had taken."""
        reclaimed = 0
        while self._fit(seq, n) < n:
            victim = self._victim_for(seq)
            if victim is None:
                break
            reclaimed += self._preempt(victim, step)
        return reclaimed

    def _preempt(self, seq: Sequence, step: SchedulerStep) -> int:
        """Send ``seq`` back to the queue, to be recomputed; returns the tokens of this
        step's budget it had taken."""
        tokens = sum(n for s, n in step.scheduled if s is seq) if seq.seq_id in step.ids else 0
        self.running.remove(seq)
        step.drop(seq)
        self._release_blocks(seq, again=True)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        step.preempted.append(seq)
        return tokens


def _lower(floor: int | None, priority: int) -> int:
    return priority if floor is None else min(floor, priority)


def _prompt_logprobs(seq: Sequence, start: int, n: int) -> tuple[int | None, int | None]:
    """What a chunk asks of prompt logprobs: the top-k, and the prompt token after the chunk
    (``ScheduledChunk``). Only a request's first sequence computes them (its siblings share
    the prompt), and only before its first sample (a recompute after a preemption would
    repeat them; the output processor keeps the first of each position)."""
    k, prompt_len = seq.params.prompt_logprobs, seq.prompt_len
    if k is None or seq.index != 0 or start >= prompt_len - 1 or len(seq.token_ids) > prompt_len:
        return None, None
    end = start + n
    return k, seq.token_ids[end] if end < prompt_len else None


def _seed(seq: Sequence) -> int | None:
    """Each of a seeded request's n sequences gets its own reproducible seed: seed + its
    index, as vLLM v1 seeds a request's n children (so choice i of seed s is what seed
    s + i gives alone). A 64-bit seed plus an index stays within what torch's generators
    take (-2**63 up to 2**64 - 1)."""
    seed = seq.params.seed
    if seed is None:
        return None
    return seed + seq.index
