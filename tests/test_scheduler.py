"""The scheduling policies on their own, with no model."""

import pytest

from sarathi.config import SchedulerConfig
from sarathi.core.scheduler import CacheCapacity, Scheduler
from sarathi.sampling_params import SamplingParams
from sarathi.sequence import Request, Sequence, SeqStatus


def _seq(sid, n_prompt, t):
    req = Request(f"r{sid}", None, list(range(n_prompt)), SamplingParams(), arrival_time=t)
    seq = Sequence(sid, 0, req, list(range(n_prompt)), n_prompt)
    req.seqs.append(seq)
    return seq


def _run(sched, step):
    """Pretend the model ran: advance and sample one token where the chunk completes."""
    for seq, n in step.scheduled:
        seq.num_computed += n
        if seq.num_computed == seq.num_tokens:
            seq.token_ids.append(1)


def _big():
    return CacheCapacity(num_blocks=10_000, tokens_per_block=16, max_slots=64)


def test_sarathi_puts_decodes_first_then_chunks_long_prompts():
    s = Scheduler(SchedulerConfig(chunk_size=16), _big(), 4096)
    a = _seq(0, 4, 0.0)
    s.add(a)
    _run(s, s.schedule())  # a prefilled, now decoding
    b = _seq(1, 40, 1.0)
    s.add(b)
    step = s.schedule()
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(0, 1), (1, 15)]
    _run(s, step)
    step = s.schedule()
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(0, 1), (1, 15)]
    _run(s, step)
    step = s.schedule()  # last 10 tokens of b's prompt, still with a's decode
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(0, 1), (1, 10)]
    assert step.input.chunks[0].sample  # the decode travels apart, in the decode lists


def test_vllm_policy_runs_whole_prefills_and_pauses_decodes():
    s = Scheduler(SchedulerConfig(scheduler="vllm", chunk_size=16), _big(), 4096)
    a = _seq(0, 4, 0.0)
    s.add(a)
    _run(s, s.schedule())
    b = _seq(1, 40, 1.0)
    s.add(b)
    step = s.schedule()
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(1, 40)]
    _run(s, step)
    step = s.schedule()
    assert sorted((x.seq_id, n) for x, n in step.scheduled) == [(0, 1), (1, 1)]


def test_max_num_seqs_limits_running():
    s = Scheduler(SchedulerConfig(chunk_size=512, max_num_seqs=2), _big(), 4096)
    for i in range(4):
        s.add(_seq(i, 5, float(i)))
    step = s.schedule()
    assert [x.seq_id for x, _ in step.scheduled] == [0, 1]
    assert s.num_waiting == 2


def test_latest_arrival_is_preempted_and_requeued_first():
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(SchedulerConfig(chunk_size=64), cap, 4096)
    a, b = _seq(0, 8, 0.0), _seq(1, 7, 1.0)
    s.add(a)
    s.add(b)
    _run(s, s.schedule())  # a: 2 blocks, b: 2 blocks; both sampled one token
    assert s.free_blocks == 0
    s.add(_seq(2, 4, 2.0))  # queued after b ran
    step = s.schedule()  # a needs a 3rd block for token 9: b (latest) is preempted
    assert [x.seq_id for x in step.preempted] == [1]
    assert b.status is SeqStatus.WAITING and b.num_computed == 0 and s.waiting[0] is b
    assert [x.seq_id for x in s.waiting] == [1, 2]  # ahead of what was queued after it
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(0, 1)]


def test_finished_sequences_release_units_and_are_forgotten_by_workers():
    s = Scheduler(SchedulerConfig(chunk_size=512), _big(), 4096)
    a = _seq(0, 5, 0.0)
    s.add(a)
    _run(s, s.schedule())
    used = 10_000 - s.free_blocks
    assert used == 1
    s.finish(a)
    assert s.free_blocks == 10_000
    assert s.schedule().input.finished == [0]


# -- the priority scheduling policy (vLLM's --scheduling-policy priority) --------------------


def _pseq(sid, n_prompt, t, priority):
    seq = _seq(sid, n_prompt, t)
    seq.request.priority = priority
    return seq


def _priority(chunk_size=64, **kwargs):
    return SchedulerConfig(chunk_size=chunk_size, scheduling_policy="priority", **kwargs)


def _full_of(s, specs):
    """Run sequences of 3-token prompts (one 4-token block each) until the 4-block cache is
    full of them, each with one sampled token; ``specs``: (id, arrival, priority)."""
    seqs = [_pseq(sid, 3, t, p) for sid, t, p in specs]
    for seq in seqs:
        s.add(seq)
    _run(s, s.schedule())
    assert s.free_blocks == 0 and all(x.status is SeqStatus.RUNNING for x in seqs)
    return seqs


def test_priority_admits_by_priority_then_arrival():
    s = Scheduler(_priority(max_num_seqs=2), _big(), 4096)
    for sid, t, p in [(0, 0.0, 5), (1, 1.0, 1), (2, 2.0, 1), (3, 3.0, 0)]:
        s.add(_pseq(sid, 5, t, p))
    step = s.schedule()
    assert [x.seq_id for x, _ in step.scheduled] == [3, 1]
    assert [x.seq_id for x in s.waiting] == [2, 0]
    # Running sequences are served in the same order.
    assert [x.seq_id for x in s.running] == [3, 1]


def test_fcfs_admits_by_arrival_whatever_the_priority():
    s = Scheduler(SchedulerConfig(chunk_size=64, max_num_seqs=2), _big(), 4096)
    for sid, t, p in [(0, 0.0, 5), (1, 1.0, 1), (2, 2.0, 0)]:
        s.add(_pseq(sid, 5, t, p))
    assert [x.seq_id for x, _ in s.schedule().scheduled] == [0, 1]


def test_a_better_priority_preempts_the_latest_of_the_worst_priority_for_memory():
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(_priority(), cap, 4096)
    _, _, c, _ = _full_of(s, [(0, 0.0, 1), (1, 1.0, 3), (2, 2.0, 3), (3, 3.0, 2)])
    e = _pseq(4, 2, 4.0, 0)
    s.add(e)
    step = s.schedule()
    assert step.preempted == [c]  # priority 3, and after b
    assert c.status is SeqStatus.WAITING and c.num_computed == 0 and c.num_blocks == 0
    # Decodes in priority order (a, d, b), then e's prompt.
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(0, 1), (3, 1), (1, 1), (4, 2)]
    assert step.input.preempted == [2]
    assert list(s.waiting) == [c]


@pytest.mark.parametrize("priority", [3, 4])
def test_no_preemption_for_an_equal_or_worse_priority(priority):
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(_priority(), cap, 4096)
    _full_of(s, [(0, 0.0, 1), (1, 1.0, 3), (2, 2.0, 3), (3, 3.0, 2)])
    e = _pseq(4, 2, 4.0, priority)
    s.add(e)
    step = s.schedule()
    assert not step.preempted and e.status is SeqStatus.WAITING
    assert [x.seq_id for x, _ in step.scheduled] == [0, 3, 1, 2]


def test_fcfs_never_preempts_for_a_waiting_request():
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(SchedulerConfig(chunk_size=64), cap, 4096)
    _full_of(s, [(0, 0.0, 1), (1, 1.0, 3), (2, 2.0, 3), (3, 3.0, 2)])
    e = _pseq(4, 2, 4.0, 0)
    s.add(e)
    step = s.schedule()
    assert not step.preempted and e.status is SeqStatus.WAITING


def test_a_running_sequence_that_cannot_grow_preempts_the_worst_priority_first():
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(_priority(), cap, 4096)
    a, b = _pseq(0, 8, 0.0, 0), _pseq(1, 7, 1.0, 5)
    c = _pseq(2, 1, 2.0, 0)  # latest, but of a better priority than b
    for seq in (a, b):
        s.add(seq)
    _run(s, s.schedule())
    assert s.free_blocks == 0
    step = s.schedule()  # a needs a 3rd block: b is preempted (fcfs would preempt b too)
    assert step.preempted == [b]
    s.add(c)
    # c (priority 0) is admitted in later steps; b (priority 5) waits behind it.
    assert [x.seq_id for x in s.waiting] == [2, 1]


def test_a_preempted_sequence_is_not_admitted_back_in_the_same_step():
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(_priority(), cap, 4096)
    low = _pseq(0, 15, 0.0, 9)  # 4 blocks with its first sampled token
    s.add(low)
    _run(s, s.schedule())
    assert s.free_blocks == 0
    high = _pseq(1, 2, 1.0, 0)  # 1 block: 3 are left after low is preempted
    s.add(high)
    step = s.schedule()
    assert step.preempted == [low]
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(1, 2)]
    assert low.status is SeqStatus.WAITING and s.free_blocks == 3


def test_a_better_priority_preempts_for_a_slot_when_every_slot_is_taken():
    s = Scheduler(_priority(max_num_seqs=2), _big(), 4096)
    a, b = _pseq(0, 5, 0.0, 2), _pseq(1, 5, 1.0, 2)
    s.add(a)
    s.add(b)
    _run(s, s.schedule())
    same = _pseq(2, 5, 2.0, 2)
    s.add(same)
    assert not s.schedule().preempted  # equal priority: it waits for a slot
    high = _pseq(3, 5, 3.0, 1)
    s.add(high)
    step = s.schedule()
    assert step.preempted == [b]
    assert [x.seq_id for x in s.running] == [3, 0]
    assert [x.seq_id for x in s.waiting] == [1, 2]


def test_a_running_prefill_of_a_better_priority_preempts_for_its_next_chunk():
    cap = CacheCapacity(num_blocks=4, tokens_per_block=4, max_slots=8)
    s = Scheduler(_priority(chunk_size=4), cap, 4096)
    low = _pseq(0, 3, 0.0, 5)
    s.add(low)
    _run(s, s.schedule())  # low: 1 block, decoding
    high = _pseq(1, 12, 1.0, 0)
    s.add(high)
    for _ in range(2):  # high prefills 3 tokens a step beside low's decode
        _run(s, s.schedule())
    assert s.free_blocks == 0 and low.num_blocks == 2 and high.num_computed == 6
    # high's next chunk needs a 3rd block, which low holds: low is preempted, its decode
    # dropped and its token of the budget given to high's chunk.
    step = s.schedule()
    assert step.preempted == [low]
    assert [(x.seq_id, n) for x, n in step.scheduled] == [(1, 3)]


def test_an_aborted_waiting_sequence_leaves_the_priority_queue():
    s = Scheduler(_priority(max_num_seqs=1), _big(), 4096)
    seqs = [_pseq(i, 5, float(i), p) for i, p in enumerate([3, 1, 2, 1])]
    for seq in seqs:
        s.add(seq)
    s.finish(seqs[3])
    s.finish(seqs[0])
    assert [x.seq_id for x in s.waiting] == [1, 2]
    assert [x.seq_id for x, _ in s.schedule().scheduled] == [1]


def _client_seq(sid, client, n=1, priority=0):
    """A request of ``n`` samples from ``client``, its sequences in order."""
    req = Request(f"r{sid}", None, [1, 2, 3], SamplingParams(n=n), client=client,
                  priority=priority)  # fmt: skip
    req.seqs.extend(Sequence(sid * 100 + i, i, req, [1, 2, 3], 3) for i in range(n))
    return req.seqs


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_a_request_from_another_client_is_next_past_a_flood(policy):
    """One client queues 20 requests; another's request, queued after them, is admitted at
    the next free slot, not after the 20."""
    s = Scheduler(SchedulerConfig(chunk_size=64, max_num_seqs=2, scheduling_policy=policy),
                  _big(), 4096)
    for sid in range(20):
        s.add(_client_seq(sid, "flood")[0])
    step = s.schedule()
    assert [x.seq_id for x, _ in step.scheduled] == [0, 100]
    _run(s, step)
    s.add(_client_seq(99, "other")[0])
    s.finish(s.running[0])
    assert [x.seq_id for x, _ in s.schedule().scheduled if x.remaining == 3] == [9900]


def test_clients_take_turns_by_samples():
    """Queued at once, two clients' requests alternate, a request of n samples counting n;
    one client alone is served in arrival order."""
    s = Scheduler(SchedulerConfig(chunk_size=512), _big(), 4096)
    for sid, client, n in [(0, "a", 2), (1, "a", 1), (2, "a", 1), (3, "b", 1), (4, "b", 1)]:
        for seq in _client_seq(sid, client, n):
            s.add(seq)
    # a's first request takes turns 0-1, so b's two come before a's second.
    assert [x.seq_id for x in s.waiting] == [0, 1, 300, 400, 100, 200]


def test_a_client_cannot_bank_turns_while_idle():
    """A client that queued nothing while others were served starts at the queue's clock."""
    s = Scheduler(SchedulerConfig(chunk_size=512, max_num_seqs=1), _big(), 4096)
    for sid in range(3):
        s.add(_client_seq(sid, "a")[0])
    for _ in range(3):
        _run(s, s.schedule())
        s.finish(s.running[0])
    for sid in (3, 4, 5):
        s.add(_client_seq(sid, "b")[0])
    s.add(_client_seq(6, "a")[0])
    # b's first request starts at the turn of the last one admitted (a's third), not at
    # 0 ahead of everything; a's next comes after its third, beside b's second.
    assert [x.request.turn for x in s.waiting] == [2, 3, 3, 4]
    assert [x.seq_id for x in s.waiting] == [300, 400, 600, 500]


def test_a_better_priority_does_not_charge_the_level_below():
    """Client a has a backlog at priority 5 and one request at 0, admitted first; b's
    request at 5 still comes right after a's first at 5, not behind a's backlog."""
    s = Scheduler(_priority(max_num_seqs=1), _big(), 4096)
    for sid in range(5):
        s.add(_client_seq(sid, "a", priority=5)[0])
    urgent = _client_seq(9, "a", priority=0)[0]
    s.add(urgent)
    _run(s, s.schedule())  # the urgent one runs
    s.finish(urgent)
    _run(s, s.schedule())  # a's first at 5
    s.add(_client_seq(7, "b", priority=5)[0])
    assert [x.seq_id for x in s.waiting][:2] == [700, 100]


def test_aborted_requests_give_their_turns_back():
    """A client that queued ten requests and dropped them all is not queued behind
    another's later requests because of them."""
    s = Scheduler(SchedulerConfig(chunk_size=512, max_num_seqs=1), _big(), 4096)
    s.add(_client_seq(0, "b")[0])
    _run(s, s.schedule())  # b's first runs
    dropped = [_client_seq(sid, "a")[0] for sid in range(1, 11)]
    for seq in dropped:
        s.add(seq)
    for seq in dropped:
        s.finish(seq)
    for sid in (20, 21):
        s.add(_client_seq(sid, "b")[0])
    s.add(_client_seq(30, "a")[0])
    # b has had a turn and a none, so a goes first (without the refund: last).
    assert [x.seq_id for x in s.waiting] == [3000, 2000, 2100]


def test_a_long_fcfs_queue_keeps_its_order_through_admission_and_aborts():
    s = Scheduler(SchedulerConfig(chunk_size=64, max_num_seqs=4), _big(), 4096)
    seqs = [_seq(i, 3, float(i)) for i in range(5000)]
    for seq in seqs:
        s.add(seq)
    for seq in seqs[10:5000:7]:
        s.finish(seq)
    left = [x.seq_id for x in s.waiting]
    assert left == sorted(left) and len(left) == 5000 - len(seqs[10:5000:7])
    assert [x.seq_id for x, _ in s.schedule().scheduled] == left[:4]


def test_turns_forget_clients_and_priorities_no_queued_request_uses():
    """A server whose requests each carry a new priority (a deadline, say) keeps no state
    per priority once their requests ran."""
    s = Scheduler(_priority(max_num_seqs=4), _big(), 4096)
    for sid in range(1000):
        seq = _client_seq(sid, f"c{sid % 7}", priority=sid)[0]
        s.add(seq)
        _run(s, s.schedule())
        s.finish(seq)
    assert len(s.turns._next) <= 128 and len(s.turns._clock) <= 128
