"""AsyncEngine's streams: outputs a reader has not taken yet arrive as one."""

from __future__ import annotations

import asyncio

import pytest

from sarathi import SamplingParams
from sarathi.config import EngineConfig
from sarathi.engine.async_engine import AsyncEngine
from sarathi.engine.llm_engine import LLMEngine
from sarathi.outputs import CompletionOutput, Logprob, RequestOutput, coalesce


def _out(
    tokens: list[int], text: str, delta: str, new: int, finish: str | None = None
) -> RequestOutput:
    lps = [{t: Logprob(-0.5, 1)} for t in tokens]
    c = CompletionOutput(0, text, tokens, -1.0, lps, finish, None, delta, new)
    return RequestOutput("r", None, [1], [c], finish is not None)


def test_coalesce_adds_deltas_and_keeps_the_later_state() -> None:
    a, b = _out([5, 6], "ab", "ab", 2), _out([7], "c", "c", 1)
    both = coalesce(a, b, delta=True).outputs[0]
    assert (both.text, both.text_delta, both.num_new_tokens) == ("abc", "abc", 3)
    assert both.token_ids == [5, 6, 7] and both.logprobs is not None and len(both.logprobs) == 3
    # Whole snapshots already carry every token and the whole text.
    whole = coalesce(a, _out([5, 6, 7], "abc", "c", 1), delta=False).outputs[0]
    assert (whole.token_ids, whole.text) == ([5, 6, 7], "abc")
    # A delta request's finished output is a delta too.
    done = coalesce(a, _out([7], "c", "c", 1, "length"), delta=True)
    assert done.finished and done.outputs[0].token_ids == [5, 6, 7]
    assert (done.outputs[0].text, done.outputs[0].num_new_tokens) == ("abc", 3)


@pytest.fixture(scope="module")
def engine():
    e = AsyncEngine(LLMEngine(EngineConfig.from_kwargs(model="demo", max_model_len=256)))
    e.start()
    yield e
    e.shutdown()


@pytest.mark.parametrize("delta", [True, False])
def test_a_reader_that_falls_behind_gets_the_steps_it_missed_as_one(engine, delta) -> None:
    params = SamplingParams(max_tokens=12, ignore_eos=True, temperature=0.0)
    longer = SamplingParams(max_tokens=24, ignore_eos=True, temperature=0.0)

    async def run() -> tuple[list[RequestOutput], RequestOutput]:
        slow = engine.generate([11, 12, 13], params, delta=delta)
        first = await anext(slow)
        # The other request runs in the same steps and outlives the first: once it is done,
        # every remaining output of the first waits in its queue.
        async for last in engine.generate([21, 22, 23], longer):
            pass
        rest = [out async for out in slow]
        return [first, *rest], last

    outs, _ = asyncio.run(run())
    assert len(outs) == 2 and outs[-1].finished
    final = outs[-1].outputs[0]
    assert sum(o.outputs[0].num_new_tokens for o in outs) == 12 == final.num_output_tokens
    text = "".join(o.outputs[0].text_delta for o in outs)
    if delta:  # every output holds what it added, the last too
        assert sum(len(o.outputs[0].token_ids) for o in outs) == 12
        assert "".join(o.outputs[0].text for o in outs) == text
    else:
        assert len(final.token_ids) == 12 and final.text == text


def test_a_request_that_sets_off_a_bug_on_adding_fails_alone(engine, monkeypatch) -> None:
    """An unexpected error while a request is added is a 500 for that request only: the
    loop runs on and serves the next one."""
    from sarathi.engine.async_engine import RequestFailed

    add = engine.engine.add_request

    def add_or_break(prompt, params, **kw):  # noqa: ANN001, ANN202 - the engine's signature
        if prompt == [66, 66]:
            add(prompt, params, **kw)  # partly added, then the bug: the abort must undo it
            raise ZeroDivisionError("a bug")
        return add(prompt, params, **kw)

    monkeypatch.setattr(engine.engine, "add_request", add_or_break)
    params = SamplingParams(max_tokens=4, ignore_eos=True, temperature=0.0)

    async def run() -> RequestOutput:
        with pytest.raises(RequestFailed, match="a bug"):
            async for _ in engine.generate([66, 66], params):
                pass
        async for last in engine.generate([11, 12], params):
            pass
        return last

    last = asyncio.run(run())
    assert last.finished and len(last.outputs[0].token_ids) == 4
    assert not engine.engine.has_unfinished_requests()


def test_a_prefix_cache_reset_after_shutdown_raises_instead_of_hanging() -> None:
    """The reset was queued for a loop that had already stopped: it waited for ever."""
    from sarathi.engine.async_engine import EngineShuttingDown

    e = AsyncEngine(LLMEngine(EngineConfig.from_kwargs(model="demo", max_model_len=256)))
    e.start()

    async def reset() -> int:
        return await asyncio.wait_for(e.reset_prefix_cache(), timeout=10)

    assert asyncio.run(reset()) == 0
    e.shutdown()
    with pytest.raises(EngineShuttingDown):
        asyncio.run(reset())


def test_a_full_queue_lets_in_only_those_one_flooding_client_locks_out() -> None:
    """With one client holding most of what is in flight, a client with nothing in flight
    is taken past a full queue, and only one request of it; when the load comes from many
    clients the bound holds for newcomers too."""
    from sarathi.engine.async_engine import EngineOverloaded

    e = AsyncEngine(LLMEngine(EngineConfig.from_kwargs(model="demo", max_model_len=256,
                                                       max_num_seqs=2)))  # fmt: skip
    bound = 4
    e.admit(6, bound, "flood")  # two running, four waiting: full
    with pytest.raises(EngineOverloaded):
        e.admit(1, bound, "flood")
    e.admit(1, bound, "victim")
    with pytest.raises(EngineOverloaded):
        e.admit(1, bound, "victim")
    for i in range(3):  # the flood still holds most: more newcomers, up to twice the bound
        e.admit(1, bound, f"v{i}")
    with pytest.raises(EngineOverloaded):
        e.admit(1, bound, "one too many")
    e.release(6, "flood")
    e.release(1, "victim")
    for i in range(3):
        e.release(1, f"v{i}")
    assert e.num_admitted == 0
    for i in range(6):  # six clients, one request each: full, and none holds most of it
        e.admit(1, bound, f"c{i}")
    with pytest.raises(EngineOverloaded):
        e.admit(1, bound, "newcomer")
    e.engine.shutdown()
