"""The priority scheduling policy (vLLM's ``--scheduling-policy priority``) on a tiny model:
priorities change the order requests run in, never their greedy tokens; a better priority
added while the KV cache is full preempts the running requests of worse ones and finishes
first; under fcfs a nonzero priority is refused, as vLLM refuses it."""

import pytest

from models import random_prompts
from sarathi import LLM, SamplingParams
from sarathi.engine.llm_engine import RequestError

# The paged baseline frees a preempted sequence's blocks through its block table, the
# vattention cache by unmapping its slot's pages: both recompute it.
CACHES = {"vattention": {}, "paged": {"attention_backend": "paged", "block_tokens": 16}}


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


def _ids(outs):
    return [o.outputs[0].token_ids for o in outs]


def _tight(llama, tokens, **kwargs):
    """An engine whose KV cache holds ``tokens`` tokens (in blocks of 32 with vattention's
    cpu backend, of 16 with the paged cache). On the CPU also on a GPU host: a GPU's
    allocation pages hold more tokens than these caches."""
    kwargs.setdefault("device", "cpu")
    probe = LLM(llama, **kwargs)
    cache = probe.engine.executor.worker.cache
    blocks = tokens // probe.engine.scheduler.capacity.tokens_per_block
    probe.engine.shutdown()
    if hasattr(cache, "geometry"):  # vattention: slots sized for short requests
        kwargs["expected_request_tokens"] = 32
        return LLM(llama, kv_cache_memory=blocks * cache.geometry.block_bytes, **kwargs)
    return LLM(llama, kv_cache_memory=blocks * cache.block_bytes, **kwargs)


@pytest.mark.parametrize("cache", sorted(CACHES))
def test_priorities_change_the_order_not_the_greedy_tokens(llama, cache):
    prompts = random_prompts(12, 384, seed=21, min_len=20, max_len=70)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain = LLM(llama, chunk_size=64, max_num_seqs=12, device="cpu", **CACHES[cache])
    expected = _ids(plain.generate(prompts, params))
    tight = _tight(llama, 384, chunk_size=64, max_num_seqs=12, scheduling_policy="priority",
                   **CACHES[cache])  # fmt: skip
    priorities = [(7 * i) % 5 - 2 for i in range(len(prompts))]
    got = _ids(tight.generate(prompts, params, priority=priorities))
    assert tight.engine.stats.preemptions > 0
    assert got == expected
    assert tight.engine.cache_stats()["slots_used"] == 0


def _finish_order(llm, low, late, n=1):
    """Four long requests of priority ``low`` fill the cache; then a short one of priority
    ``late`` arrives. Returns the request ids in the order they finished."""
    engine = llm.engine
    prompts = random_prompts(5, 384, seed=22, min_len=30, max_len=31)
    long = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    for i in range(4):
        engine.add_request(prompts[i], long, request_id=f"low-{i}", priority=low)
    while engine.scheduler.free_blocks > 0:
        engine.step()
    assert engine.scheduler.num_running >= 2  # the cache is full of running requests
    short = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, n=n)
    engine.add_request(prompts[4], short, request_id="late", priority=late)
    finished = []
    while engine.has_unfinished_requests():
        finished += [o.request_id for o in engine.step() if o.finished]
    return finished


@pytest.mark.parametrize("cache", sorted(CACHES))
@pytest.mark.parametrize("n", [1, 2])
def test_a_better_priority_added_while_the_cache_is_full_finishes_first(llama, cache, n):
    llm = _tight(llama, 256, chunk_size=64, max_num_seqs=8, scheduling_policy="priority",
                 **CACHES[cache])  # fmt: skip
    before = llm.engine.stats.preemptions
    assert _finish_order(llm, low=5, late=0, n=n)[0] == "late"
    assert llm.engine.stats.preemptions > before  # its preemptions are counted as any
    assert llm.engine.cache_stats()["slots_used"] == 0


def test_under_fcfs_the_late_request_waits_for_memory(llama):
    llm = _tight(llama, 256, chunk_size=64, max_num_seqs=8)
    assert _finish_order(llm, low=0, late=0)[0] != "late"


def test_an_equal_priority_does_not_jump_the_queue(llama):
    llm = _tight(llama, 256, chunk_size=64, max_num_seqs=8, scheduling_policy="priority")
    assert _finish_order(llm, low=5, late=5)[0] != "late"


def test_generate_takes_one_priority_per_prompt(llama):
    llm = LLM(llama, chunk_size=32, scheduling_policy="priority")
    prompts = random_prompts(3, 384, seed=23, min_len=5, max_len=20)
    greedy = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    want = _ids(llm.generate(prompts, greedy))
    outs = llm.generate(prompts, greedy, priority=[3, -1, 0])
    assert _ids(outs) == want  # in the order of the prompts
    with pytest.raises(ValueError, match="3 prompts but 2 priorities"):
        llm.generate(prompts, greedy, priority=[0, 1])
    with pytest.raises(ValueError, match="priority must be an integer"):
        llm.generate(prompts, greedy, priority=[0, 1.5, 0])
    with pytest.raises(ValueError, match="list of integers"):
        llm.generate(prompts, greedy, priority=1)
    assert not llm.engine.has_unfinished_requests()


CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def test_chat_takes_one_priority_per_conversation_as_generate(llama, monkeypatch):
    """LLM.chat passes generate's priority on, one per conversation, checked as generate
    checks it and before any conversation is rendered or queued."""
    llm = LLM(llama, chunk_size=32, scheduling_policy="priority")
    chats = [[{"role": "user", "content": text}] for text in ("one two", "three", "four five")]
    greedy = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    want = _ids(llm.chat(chats, greedy, chat_template=CHAT_TEMPLATE))
    given = []
    add = llm.engine.add_request

    def recording(*args, **kwargs):
        given.append(kwargs["priority"])
        return add(*args, **kwargs)

    monkeypatch.setattr(llm.engine, "add_request", recording)
    outs = llm.chat(chats, greedy, chat_template=CHAT_TEMPLATE, priority=[3, -1, 0])
    assert _ids(outs) == want and given == [3, -1, 0]
    (one,) = llm.chat(chats[0], greedy, chat_template=CHAT_TEMPLATE, priority=[2])
    assert one.outputs[0].token_ids == want[0] and given[-1] == 2
    for bad, match in (([0, 1], "3 conversations but 2 priorities"),
                       ([0, 1.5, 0], "priority must be an integer"),
                       (1, "list of integers, one per conversation")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            llm.chat(chats, greedy, chat_template=CHAT_TEMPLATE, priority=bad)
    assert len(given) == 4 and not llm.engine.has_unfinished_requests()


def test_a_priority_under_fcfs_names_the_flag(llama):
    llm = LLM(llama, chunk_size=32)
    prompts = random_prompts(2, 384, seed=24, min_len=5, max_len=20)
    with pytest.raises(ValueError, match="--scheduling-policy priority"):
        llm.generate(prompts, SamplingParams(max_tokens=2), priority=[0, 2])
    assert not llm.engine.has_unfinished_requests()  # nothing was queued
    chat = [{"role": "user", "content": "one"}]
    with pytest.raises(ValueError, match="--scheduling-policy priority"):
        llm.chat(chat, SamplingParams(max_tokens=2), chat_template=CHAT_TEMPLATE, priority=[1])
    with pytest.raises(RequestError, match="got priority -1 but priority scheduling"):
        llm.engine.add_request(prompts[0], SamplingParams(max_tokens=2), priority=-1)
    (out,) = llm.generate(prompts[:1], SamplingParams(max_tokens=2), priority=[0])
    assert len(out.outputs[0].token_ids) == 2


def test_the_policy_is_a_flag_and_a_keyword_with_vllms_choices(llama):
    with pytest.raises(ValueError, match="scheduling_policy must be one of fcfs, priority"):
        LLM(llama, scheduling_policy="sjf")


def test_serve_takes_vllms_scheduling_policy_flag():
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    for flag in ("--scheduling-policy", "--scheduling_policy"):
        args = build_parser().parse_args(["serve", "demo", flag, "priority"])
        assert config_from_args(args).scheduler.scheduling_policy == "priority"
    default = config_from_args(build_parser().parse_args(["serve", "demo"]))
    assert default.scheduler.scheduling_policy == "fcfs"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "demo", "--scheduling-policy", "sjf"])
