"""The scheduling policies on their own, with no model."""

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
    step = s.schedule()  # a needs a 3rd block for token 9: b (latest) is preempted
    assert [x.seq_id for x in step.preempted] == [1]
    assert b.status is SeqStatus.WAITING and b.num_computed == 0 and s.waiting[0] is b
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
