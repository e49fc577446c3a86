"""Which sequences run in the next step, and how many tokens each.

``sarathi`` (Sarathi-Serve's stall-free batching): one token budget per step; running decodes
first (one token each), then the unfinished prefill chunks, then new requests in arrival
order while the budget, the slots and the KV pages allow. A long prompt is prefilled in
chunks across steps, mixed with the decodes of the others.

``vllm`` (the baseline): whenever a waiting prompt fits, the step is whole prefills only and
the running decodes wait; otherwise a step of decodes.

KV memory is counted in allocation units (``tokens_per_unit`` tokens of one slot, all
layers). When a running sequence cannot grow, the latest-arrived running sequence is
preempted: its pages are freed and it returns to the front of the queue, to be recomputed.
No sequence is ever dropped.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from sarathi.config import SchedulerConfig
from sarathi.core.scheduler_output import NewSequence, ScheduledChunk, StepInput
from sarathi.sequence import Sequence, SeqStatus


@dataclass
class SchedulerStep:
    input: StepInput
    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)  # seq ids in ``scheduled``
    index: dict[int, Sequence] | None = None  # seq id -> sequence, built when needed

    def add(self, seq: Sequence, n: int) -> None:
        self.scheduled.append((seq, n))
        self.ids.add(seq.seq_id)

    def drop(self, seq: Sequence) -> None:
        if seq.seq_id in self.ids:
            self.ids.discard(seq.seq_id)
            self.scheduled = [(s, n) for s, n in self.scheduled if s is not seq]

    @property
    def empty(self) -> bool:
        return not self.scheduled


@dataclass(frozen=True)
class CacheCapacity:
    """What the cache engine can hold; computed once and passed to the scheduler."""

    num_units: int
    tokens_per_unit: int
    max_slots: int

    def units_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.tokens_per_unit)

    @property
    def max_tokens(self) -> int:
        return self.num_units * self.tokens_per_unit


class Scheduler:
    def __init__(self, config: SchedulerConfig, capacity: CacheCapacity, max_model_len: int
                 ) -> None:
        self.config = config
        self.capacity = capacity
        self.max_model_len = max_model_len
        self.max_running = min(config.max_num_seqs, capacity.max_slots)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # sorted by arrival
        self.free_units = capacity.num_units
        self._to_forget: list[int] = []

    # -- queue management ------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Release a finished or aborted sequence wherever it is."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.free_units += seq.num_units
        seq.num_units = 0
        seq.status = SeqStatus.FINISHED
        if seq.sent_to_worker:
            self._to_forget.append(seq.seq_id)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self._to_forget)

    # -- one step --------------------------------------------------------------------------
    def schedule(self) -> SchedulerStep:
        step = SchedulerStep(StepInput())
        if self.config.scheduler == "vllm":
            self._schedule_vllm(step)
        else:
            self._schedule_sarathi(step)
        step.input.finished = self._to_forget
        self._to_forget = []
        step.input.preempted = [s.seq_id for s in step.preempted if s.sent_to_worker]
        chunks = step.input.chunks
        for seq, n in step.scheduled:
            if not seq.sent_to_worker:
                seq.sent_to_worker = True
                p = seq.params
                seed = None if p.seed is None else (p.seed if seq.index == 0
                                                    else hash((p.seed, seq.index)) & 0x7FFFFFFF)
                step.input.new_sequences.append(NewSequence(seq.seq_id, p, seq.prompt_len, seed))
            start = seq.num_computed
            tokens = seq.token_ids
            if n == 1 and start + 1 == len(tokens):
                chunks.append(ScheduledChunk(seq.seq_id, start, [tokens[-1]], True))
            else:
                chunks.append(ScheduledChunk(seq.seq_id, start, tokens[start:start + n],
                                             start + n == len(tokens)))
        return step

    def _schedule_sarathi(self, step: SchedulerStep) -> None:
        budget = self.config.chunk_size
        while True:
            budget = self._schedule_decodes(step, budget)
            for seq in list(self.running):
                if budget <= 0:
                    break
                if seq.remaining > 1 and seq.seq_id not in step.ids:
                    n = self._fit(seq, min(seq.remaining, budget))
                    if n:
                        self._grow(seq, seq.num_computed + n)
                        step.add(seq, n)
                        budget -= n
            # After a preemption, admitting work would only thrash: the freed pages are for
            # the running sequences.
            if not step.preempted or not self.running:
                budget = self._admit(step, budget, whole=False)
            # Deadlock guard: partial prefills can hold every page while none can grow.
            if step.scheduled or not self.running:
                return
            self._preempt(self.running[-1], step)

    def _schedule_vllm(self, step: SchedulerStep) -> None:
        budget = max(self.config.chunk_size, self.max_model_len)
        self._admit(step, budget, whole=True)
        if step.scheduled:
            return
        while True:
            self._schedule_decodes(step, len(self.running))
            # Prefills interrupted by preemption resume here, whole.
            for seq in list(self.running):
                if seq.remaining > 1 and seq.seq_id not in step.ids:
                    if self._fit(seq, seq.remaining) == seq.remaining:
                        self._grow(seq, seq.num_tokens)
                        step.add(seq, seq.remaining)
            if step.scheduled or not self.running:
                return
            self._preempt(self.running[-1], step)

    def _schedule_decodes(self, step: SchedulerStep, budget: int) -> int:
        # The hot loop of a decode-heavy engine: plain attribute arithmetic only.
        tpu = self.capacity.tokens_per_unit
        ids = step.ids
        running = SeqStatus.RUNNING
        for seq in list(self.running):
            if budget <= 0:
                break
            nc = seq.num_computed
            if seq.status is not running or len(seq.token_ids) - nc != 1 or seq.seq_id in ids:
                continue
            need = nc + 1
            if need > seq.num_units * tpu:
                while self._units_short(seq, need) > 0:
                    victim = self.running[-1]
                    self._preempt(victim, step)
                    if victim is seq:
                        break
                if seq.status is not running:
                    continue
                self._grow(seq, need)
            step.add(seq, 1)
            budget -= 1
        return budget

    def _admit(self, step: SchedulerStep, budget: int, whole: bool) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            seq = self.waiting[0]
            want = seq.remaining
            if whole and want > budget:
                break
            n = self._fit(seq, min(want, budget))
            if n == 0 or (whole and n < want):
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            bisect.insort(self.running, seq, key=_arrival)
            self._grow(seq, seq.num_computed + n)
            step.add(seq, n)
            budget -= n
        return budget

    # -- KV accounting ---------------------------------------------------------------------
    def _units_short(self, seq: Sequence, num_tokens: int) -> int:
        need = self.capacity.units_for(num_tokens) - seq.num_units
        return need - self.free_units

    def _fit(self, seq: Sequence, n: int) -> int:
        """Largest m <= n such that tokens up to num_computed + m fit in the free units."""
        tpu = self.capacity.tokens_per_unit
        limit = (seq.num_units + self.free_units) * tpu - seq.num_computed
        return max(0, min(n, limit))

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        need = self.capacity.units_for(num_tokens) - seq.num_units
        if need > 0:
            assert need <= self.free_units, "scheduler over-committed the KV cache"
            self.free_units -= need
            seq.num_units += need

    def _preempt(self, seq: Sequence, step: SchedulerStep) -> None:
        self.running.remove(seq)
        step.drop(seq)
        self.free_units += seq.num_units
        seq.num_units = 0
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        step.preempted.append(seq)


def _arrival(seq: Sequence) -> tuple[float, int]:
    return (seq.request.arrival_time, seq.seq_id)

