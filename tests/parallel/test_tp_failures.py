"""A tensor-parallel worker that dies or hangs fails the engine's requests quickly."""

import os
import signal
import time

import pytest

from sarathi import LLM, SamplingParams
from sarathi.executor import WorkerDiedError, WorkerError


def _start(llm: LLM, count: int = 3) -> None:
    """Requests in flight: prefilled and decoding."""
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    for i in range(count):
        engine.add_request([5 + i, 6, 7, 8], params)
    for _ in range(3):
        engine.step()
    assert engine.has_unfinished_requests()


def _fails_within(llm: LLM, seconds: float, match: str) -> WorkerError:
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=match) as info:
        while llm.engine.has_unfinished_requests():
            llm.engine.step()
    assert time.monotonic() - start < seconds
    return info.value


def _tp2(path: str, overlap: bool, **kwargs) -> LLM:
    """Two mp ranks; with ``overlap`` (the GPU default) a step is in flight when a rank
    fails."""
    return LLM(
        path,
        tensor_parallel_size=2,
        executor="mp",
        max_num_seqs=4,
        overlap_scheduling=overlap,
        **kwargs,
    )


@pytest.mark.parametrize("overlap", [False, True])
def test_killed_worker_fails_in_flight_requests(tp_models, overlap):
    llm = _tp2(tp_models["llama"], overlap)
    try:
        _start(llm)
        pids = llm.engine.executor.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        error = _fails_within(llm, 10, "rank 1 .*died .*SIGKILL")
        assert not llm.engine.is_alive()
        # The executor stays failed: the next step says so at once instead of hanging.
        with pytest.raises(WorkerDiedError, match="earlier failure"):
            llm.engine.step()
        assert str(error)
    finally:
        llm.engine.shutdown()
    for pid in pids:  # every rank is gone, the survivor included
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_generate_raises_the_failure_itself(tp_models):
    """LLM.generate's cleanup (aborting its requests) must not talk to the dead ranks: it
    used to raise "unusable after an earlier failure" over the error that ended the step."""
    llm = _tp2(tp_models["llama"], overlap=False)
    try:
        os.kill(llm.engine.executor.worker_pids()[1], signal.SIGKILL)
        params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        with pytest.raises(WorkerDiedError, match="rank 1 .*died .*SIGKILL") as info:
            llm.generate([[5, 6, 7, 8]] * 2, params)
        assert "earlier failure" not in str(info.value)
        assert not llm.engine.has_unfinished_requests()
    finally:
        llm.engine.shutdown()


def _fail_a_corrupted_step(llm: LLM, monkeypatch) -> WorkerError:
    """Every rank fails to decode the steps sent after this (their bytes are zeros): the
    error the engine raises for them."""
    import sarathi.executor.mp as mp_executor

    _start(llm, count=1)
    monkeypatch.setattr(mp_executor, "encode_step", lambda step: b"\0" * 4096)
    with pytest.raises(WorkerError, match="failed in a step") as info:
        while llm.engine.has_unfinished_requests():
            llm.engine.step()
    return info.value


def test_rank_that_raises_in_a_step_is_reported_with_its_error(tp_models, monkeypatch):
    """Every rank fails to decode a corrupted step, reports its traceback and returns: the
    driver raises that report, not "rank 0 died with exit code 0" (rank 0's error used to
    stay unread behind its last reply once its exit was seen)."""
    llm = _tp2(tp_models["llama"], overlap=False)
    pids = llm.engine.executor.worker_pids()
    try:
        error = _fail_a_corrupted_step(llm, monkeypatch)
        assert not isinstance(error, WorkerDiedError)
        assert "not a step message of this build" in str(error)
        assert not llm.engine.is_alive()
    finally:
        llm.engine.shutdown()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_ranks_traceback_stays_out_of_the_error_message(tp_models, monkeypatch):
    """The message of a rank's failure is one line: the server sends it to every client of
    the failed engine (503 engine_dead), and the rank's traceback names the server's files.
    The traceback rides along as a note, for logs and printed tracebacks."""
    llm = _tp2(tp_models["llama"], overlap=False)
    try:
        error = _fail_a_corrupted_step(llm, monkeypatch)
        message = str(error)
        assert "not a step message of this build" in message
        assert "Traceback" not in message and "File \"" not in message
        assert "\n" not in message
        notes = "\n".join(getattr(error, "__notes__", []))
        assert "Traceback" in notes and "step_codec.py" in notes
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("overlap", [False, True])
def test_hung_worker_times_out(tp_models, overlap):
    llm = _tp2(tp_models["llama"], overlap, step_timeout=3)
    try:
        _start(llm, count=1)
        os.kill(llm.engine.executor.worker_pids()[1], signal.SIGSTOP)
        _fails_within(llm, 10, "did not finish a step within 3 s")
        assert not llm.engine.is_alive()
    finally:
        llm.engine.shutdown()


def test_bad_split_is_refused_before_starting(tp_models):
    with pytest.raises(ValueError, match="must divide the model's 4 attention heads"):
        LLM(tp_models["llama"], tensor_parallel_size=3, executor="mp")
    with pytest.raises(ValueError, match="uni executor runs one rank"):
        LLM(tp_models["llama"], tensor_parallel_size=2, executor="uni")


def test_ctrl_c_at_a_terminal_leaves_the_ranks_running(tp_models):
    """Ctrl-C at a terminal signals the whole foreground process group: the ranks leave it
    to the driver instead of dying of KeyboardInterrupt (which failed the engine)."""
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompts = [[5, 6, 7, 8], [9, 10]]
    expected = [o.outputs[0].token_ids for o in LLM(tp_models["llama"]).generate(prompts, params)]
    llm = _tp2(tp_models["llama"], overlap=True)
    try:
        for pid in llm.engine.executor.worker_pids():
            os.kill(pid, signal.SIGINT)
        assert [o.outputs[0].token_ids for o in llm.generate(prompts, params)] == expected
        assert llm.engine.is_alive()
    finally:
        llm.engine.shutdown()


def test_reply_of_an_interrupted_step_is_dropped(tp_models):
    """Ctrl-C while waiting for a step: its late reply must not be taken for the next one."""
    from models import random_prompts

    prompts = random_prompts(3, 384, seed=4, max_len=20)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in LLM(tp_models["llama"]).generate(prompts, params)]
    llm = LLM(tp_models["llama"], tensor_parallel_size=2, executor="mp", max_num_seqs=4)
    try:
        executor = llm.engine.executor
        wait_messages = executor._wait_messages
        calls = []

        def interrupted_once(*args, **kwargs):
            if not calls:
                calls.append(1)
                raise KeyboardInterrupt
            return wait_messages(*args, **kwargs)

        executor._wait_messages = interrupted_once
        with pytest.raises(KeyboardInterrupt):
            llm.generate(prompts, params)
        outs = llm.generate(prompts, params)
        assert [o.outputs[0].token_ids for o in outs] == expected
    finally:
        llm.engine.shutdown()


def test_a_ray_ranks_traceback_stays_out_of_the_error_message():
    """As with the mp executor: a RayTaskError's text holds the rank's traceback, which names
    the server's files; the message the clients get is one line, the traceback a note."""
    ray_exceptions = pytest.importorskip("ray.exceptions")
    from sarathi.executor.ray_executor import task_error

    remote = 'Traceback (most recent call last):\n  File "/srv/app/worker.py", line 3\nValueError: boom'
    error = task_error(1, "a step", ray_exceptions.RayTaskError("step", remote, ValueError("boom")))
    assert str(error) == "tensor-parallel rank 1 failed during a step: ValueError: boom"
    assert "/srv/app/worker.py" in "\n".join(error.__notes__)
