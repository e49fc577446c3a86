"""LLM.generate against vLLM's offline contract: decoded logprob tokens, detokenize=False,
a generation_config.json with top_k 0, sampling_params of the wrong type and
CompletionOutput.finished()."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from sarathi import LLM, SamplingParams
from sarathi.engine.llm_engine import RequestError

PROMPT = "Hello, my name is"


@pytest.fixture(scope="module")
def llm(tiny_models):
    llm = LLM(tiny_models["llama"], max_num_seqs=8)
    yield llm
    llm.engine.shutdown()


def test_the_engine_s_model_config_gives_the_context_as_vllm_s(llm, tiny_models):
    """vLLM scripts size prompts by llm.llm_engine.model_config.max_model_len; it was an
    AttributeError."""
    config = llm.llm_engine.model_config
    assert config.max_model_len == llm.engine.setup.max_model_len > 0
    assert config.model == tiny_models["llama"]
    assert llm.llm_engine.get_model_config() == config


def test_logprobs_name_their_tokens_as_vllm(llm):
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=4, logprobs=2, prompt_logprobs=1)
    (out,) = llm.generate(PROMPT, params)
    entries = [e for e in out.prompt_logprobs if e is not None] + out.outputs[0].logprobs
    assert len(entries) == len(out.prompt_token_ids) - 1 + 4
    for entry in entries:
        for tid, lp in entry.items():
            assert lp.decoded_token == tok.decode([tid])


def test_detokenize_false_gives_token_ids_without_text(llm):
    greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=0)
    plain = SamplingParams(
        temperature=0, max_tokens=6, ignore_eos=True, logprobs=0, detokenize=False
    )
    (a,), (b,) = llm.generate(PROMPT, greedy), llm.generate(PROMPT, plain)
    assert a.outputs[0].text and b.outputs[0].text == ""
    assert b.outputs[0].token_ids == a.outputs[0].token_ids
    assert all(lp.decoded_token is None for e in b.outputs[0].logprobs for lp in e.values())


def test_a_generation_config_with_top_k_zero_serves_default_requests(tiny_models, tmp_path):
    # Qwen-style generation_config.json files say "top_k": 0 to mean no top-k, as vLLM reads it.
    model = tmp_path / "model"
    shutil.copytree(tiny_models["llama"], model)
    (model / "generation_config.json").write_text(json.dumps({"top_k": 0, "top_p": 0.8}))
    llm = LLM(os.fspath(model))
    try:
        assert llm.get_default_sampling_params().top_k == 0
        (out,) = llm.generate(PROMPT)
        assert out.outputs[0].token_ids
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("bad", [{"max_tokens": 3}, [{"max_tokens": 3}], "greedy"])
def test_sampling_params_of_the_wrong_type_are_a_clear_error_and_queue_nothing(llm, bad):
    with pytest.raises(ValueError, match="sampling_params"):
        llm.generate([PROMPT], bad)
    assert not llm.engine.has_unfinished_requests()


def test_a_refused_request_has_n_errored_completions_and_its_prompt_ids(llm):
    tok = llm.get_tokenizer()
    long_prompt = "hello " * 2000
    ok, refused = llm.generate(
        [PROMPT, long_prompt], SamplingParams(n=2, temperature=0, max_tokens=2)
    )
    assert ok.error is None and len(ok.outputs) == 2
    assert refused.error and refused.finished
    assert [c.index for c in refused.outputs] == [0, 1]
    assert all(c.finish_reason == "error" for c in refused.outputs)
    assert refused.prompt == long_prompt
    assert refused.prompt_token_ids == tok.encode(long_prompt)


def test_min_tokens_ignores_stop_strings_in_its_first_tokens_as_vllm(llm):
    # vLLM checks stop strings only once more than min_tokens tokens exist: a stop string
    # that the min_tokens-th token completes does not stop the output.
    tok = llm.get_tokenizer()
    seeded = dict(temperature=1.0, seed=0, max_tokens=24, ignore_eos=True)
    base = llm.generate(PROMPT, SamplingParams(**seeded))[0].outputs[0]
    text, ids = base.text, base.token_ids

    def starts(i: int) -> int:
        return len(tok.decode(ids[:i]))

    # A token whose text is plain, written once, where it first appears.
    j = next(
        i
        for i in range(2, len(ids) - 1)
        if (piece := tok.decode([ids[i]])).strip().isalpha()
        and text.count(piece) == 1
        and text.find(piece) == starts(i)
    )
    stop = tok.decode([ids[j]])
    out = llm.generate(PROMPT, SamplingParams(**seeded, stop=[stop], min_tokens=j))[0].outputs[0]
    assert out.finish_reason == "stop" and out.token_ids == ids[: j + 1]
    assert out.text == text[: starts(j)]
    later = SamplingParams(**seeded, stop=[stop], min_tokens=j + 1)
    out = llm.generate(PROMPT, later)[0].outputs[0]
    assert out.finish_reason == "length" and out.token_ids == ids


def test_a_completions_finished_is_a_method_as_vllms(llm):
    (out,) = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert out.finished is True  # RequestOutput: a field
    assert out.outputs[0].finished() is True  # CompletionOutput: a method


def test_stop_strings_set_on_a_default_sampling_params_in_place_are_honoured(llm):
    # vLLM's examples change llm.get_default_sampling_params() in place; a stop set so was
    # ignored (the list of stop strings was kept from construction).
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    (base,) = llm.generate(PROMPT, greedy)
    stop = llm.get_tokenizer().decode(base.outputs[0].token_ids[3:5])
    params = llm.get_default_sampling_params()
    params.temperature, params.max_tokens, params.ignore_eos = 0, 12, True
    params.stop = stop
    (out,) = llm.generate(PROMPT, params)
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].stop_reason == stop
    assert len(out.outputs[0].token_ids) < 12


def test_a_bad_stop_set_in_place_is_refused_when_the_request_is_added(llm):
    params = SamplingParams(max_tokens=2)
    params.stop = [""]  # not checked at construction: checked when the engine takes it
    (bad,) = llm.generate(PROMPT, params)
    assert bad.outputs[0].finish_reason == "error" and "stop must be non-empty" in bad.error
    (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=2, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 2


@pytest.mark.parametrize("field,value", [
    ("n", 0), ("max_tokens", 0), ("temperature", -1.0), ("top_p", 0.0), ("logprobs", -2),
    ("min_tokens", 100), ("seed", "x"),
])  # fmt: skip
def test_a_bad_value_set_in_place_fails_its_request_when_it_is_added(llm, field, value):
    # Unchecked, n=0 never finished (generate spun forever) and the others ran as asked.
    params = SamplingParams(max_tokens=2)
    setattr(params, field, value)
    (bad,) = llm.generate(PROMPT, params)
    assert bad.error and field in bad.error
    (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=2, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 2


def test_an_error_while_queueing_leaves_no_request_of_the_batch_behind(llm, monkeypatch):
    # The second prompt fails in the tokenizer (not a RequestError): the first, already
    # queued, was left in the engine and ran inside the next generate call.
    engine = llm.engine
    add = engine.add_request
    calls = []

    def failing_second(*args, **kwargs):
        calls.append(kwargs["request_id"])
        if len(calls) == 2:
            raise TypeError("the tokenizer failed")
        return add(*args, **kwargs)

    monkeypatch.setattr(engine, "add_request", failing_second)
    with pytest.raises(TypeError, match="the tokenizer failed"):
        llm.generate([PROMPT, PROMPT], SamplingParams(max_tokens=2))
    monkeypatch.undo()
    assert not engine.requests and calls[0] not in engine.requests
    (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=2, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 2


def test_text_with_a_lone_surrogate_is_a_clear_error_that_queues_nothing(llm):
    # The tokenizer raised a bare TypeError ("TextEncodeInput must be ...") from deep inside
    # for each of these.
    with pytest.raises(ValueError, match="prompt 1: not valid Unicode"):
        llm.generate([PROMPT, "a\ud800b"], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="prompt 0: not valid Unicode"):
        llm.generate({"prompt": "\udfff"}, SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished_requests()
    with pytest.raises(ValueError, match="bad_words"):
        SamplingParams(bad_words=["ok", "\ud800"])
    with pytest.raises(ValueError, match="not valid Unicode"):
        llm.chat(
            [{"role": "user", "content": "hi \ud800"}],
            SamplingParams(max_tokens=2),
            chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
        )
    assert not llm.engine.has_unfinished_requests()


@pytest.mark.parametrize("bad", [None, 5, 2.5])
def test_prompts_or_messages_that_are_not_lists_are_a_clear_error(llm, bad):
    # None raised "'NoneType' object is not iterable" from inside generate and chat.
    with pytest.raises(ValueError, match="prompts must be a prompt"):
        llm.generate(bad, SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="messages must be a conversation"):
        llm.chat(bad, SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished_requests()


def test_llm_engine_is_vllms_name_for_the_engine(llm):
    # vLLM code reaches the engine as llm.llm_engine (an AttributeError here before).
    assert llm.llm_engine is llm.engine
    assert llm.llm_engine.get_tokenizer() is llm.get_tokenizer()
    # vLLM's engine takes (request_id, prompt, params); this one (prompt, params, ...): the
    # swapped call failed on the string's missing SamplingParams attributes.
    with pytest.raises(TypeError, match=r"add_request takes \(prompt, params"):
        llm.llm_engine.add_request("0", PROMPT, SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished_requests()


def test_token_ids_may_be_numpy_integers(llm):
    # list(numpy_array) holds numpy.int64s: one such prompt was read as a batch of
    # one-integer prompts and refused ("got int64"), a batch of them as "got list".
    np = pytest.importorskip("numpy")
    ids = llm.get_tokenizer().encode(PROMPT)
    greedy = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    (want,) = llm.generate({"prompt_token_ids": ids}, greedy)
    as_numpy = list(np.array(ids, dtype=np.int64))
    (one,) = llm.generate(as_numpy, greedy)
    (batched,) = llm.generate([as_numpy], greedy)
    (in_dict,) = llm.generate({"prompt_token_ids": as_numpy}, greedy)
    for out in (one, batched, in_dict):
        assert out.outputs[0].token_ids == want.outputs[0].token_ids
        assert out.prompt_token_ids == ids
        assert all(type(t) is int for t in out.prompt_token_ids)


def test_token_id_prompts_are_copied_and_bools_refused(llm):
    # Plain-int prompts take a fast path (no per-token ABC check): it must still copy the
    # caller's list and still refuse bools, which are ints to Python.
    ids = llm.get_tokenizer().encode(PROMPT)
    mine = list(ids)
    (out,) = llm.generate([mine], SamplingParams(max_tokens=2, ignore_eos=True))
    assert mine == ids and out.prompt_token_ids == ids
    assert out.prompt_token_ids is not mine
    with pytest.raises(ValueError, match="prompt 0: expected a string"):
        llm.generate([[ids[0], True]])
    with pytest.raises(ValueError, match="prompt 1: expected a string"):
        llm.generate([ids, [1.0, 2.0]])
    assert not llm.engine.has_unfinished_requests()


def test_truncate_prompt_tokens_keeps_the_prompts_last_tokens_as_vllm(llm):
    # vLLM's field was refused as an unexpected keyword argument.
    tok = llm.get_tokenizer()
    ids = tok.encode(PROMPT)
    greedy = dict(temperature=0, max_tokens=4, ignore_eos=True)
    (cut,) = llm.generate(PROMPT, SamplingParams(**greedy, truncate_prompt_tokens=3))
    assert cut.prompt_token_ids == ids[-3:]
    (same,) = llm.generate({"prompt_token_ids": ids[-3:]}, SamplingParams(**greedy))
    assert cut.outputs[0].token_ids == same.outputs[0].token_ids
    (ids_cut,) = llm.generate([ids], SamplingParams(**greedy, truncate_prompt_tokens=2))
    assert ids_cut.prompt_token_ids == ids[-2:]
    # -1: whatever the context takes, leaving room to generate (a too-long prompt fits).
    long_ids = (ids * 400)[: llm.engine.max_seq_len + 50]
    (fit,) = llm.generate([long_ids], SamplingParams(max_tokens=1, truncate_prompt_tokens=-1))
    assert fit.error is None and fit.prompt_token_ids == long_ids[-(llm.engine.max_seq_len - 1) :]
    assert len(fit.outputs[0].token_ids) == 1


def test_output_kind_is_read_as_vllm_reads_it(llm):
    from sarathi.sampling_params import RequestOutputKind

    # LLM.generate returns finished outputs whatever output_kind says, as vLLM's does.
    greedy = dict(temperature=0, max_tokens=4, ignore_eos=True)
    base = llm.generate(PROMPT, SamplingParams(**greedy))[0].outputs[0]
    for kind in RequestOutputKind:
        params = SamplingParams(**greedy, output_kind=kind)
        (out,) = llm.generate(PROMPT, params)
        assert out.error is None and out.outputs[0].token_ids == base.token_ids
        assert params.output_kind is kind
    # The engine: FINAL_ONLY gives one output, at the end; DELTA outputs hold what each
    # added (the finished one too), adding up to the cumulative output.
    engine = llm.llm_engine
    seen: dict[str, list] = {}
    for kind in RequestOutputKind:
        params = SamplingParams(**greedy, logprobs=2, output_kind=kind)
        engine.add_request(PROMPT, params, request_id=kind.name)
    while engine.has_unfinished_requests():
        for o in engine.step():
            seen.setdefault(o.request_id, []).append(o)
    final, delta, whole = seen["FINAL_ONLY"], seen["DELTA"], seen["CUMULATIVE"][-1].outputs[0]
    assert len(final) == 1 and final[0].finished and len(delta) > 1 and delta[-1].finished
    parts = [o.outputs[0] for o in delta]
    assert len(parts[-1].token_ids) == 1
    assert "".join(c.text for c in parts) == whole.text == final[0].outputs[0].text
    assert [t for c in parts for t in c.token_ids] == whole.token_ids
    # Logprob values may differ in the last bits: the requests sit in different rows.
    got = [lp for c in parts for lp in c.logprobs]
    assert [list(e) for e in got] == [list(e) for e in whole.logprobs]
    assert [v.logprob for e in got for v in e.values()] == pytest.approx(
        [v.logprob for e in whole.logprobs for v in e.values()], abs=1e-4
    )


@pytest.mark.parametrize("method,match", [
    ("beam_search", "SamplingParams\\(n="), ("embed", "generative"), ("encode", "generative"),
    ("classify", "generative"), ("score", "generative"), ("reward", "generative"),
    ("sleep", "shutdown"), ("wake_up", "shutdown"), ("start_profile", "SARATHI_RANK_PROFILE"),
    ("stop_profile", "SARATHI_RANK_PROFILE"), ("set_tokenizer", "tokenizer="),
    ("collective_rpc", "not supported"), ("apply_model", "not supported"),
])
def test_vllm_methods_this_engine_lacks_say_so_and_what_to_use(llm, method, match):
    # They were AttributeErrors, as for a misspelt name; hasattr stays true and harmless.
    assert hasattr(llm, method)
    with pytest.raises(NotImplementedError, match=match):
        getattr(llm, method)(PROMPT)
    assert not llm.engine.has_unfinished_requests()


def test_use_tqdm_may_be_a_callable_that_makes_the_bar_as_vllms(llm):
    # vLLM takes e.g. functools.partial(tqdm, leave=False); it was read as True and a plain
    # bar shown, the callable never called.
    from tqdm.auto import tqdm

    made = []

    def bar(*args, **kwargs):
        made.append(kwargs)
        return tqdm(*args, **kwargs)

    (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=bar)
    assert len(out.outputs[0].token_ids) == 2
    assert len(made) == 1 and made[0]["total"] == 1 and not made[0]["disable"]
    messages = [{"role": "user", "content": PROMPT}]
    llm.chat(messages, SamplingParams(max_tokens=2), use_tqdm=bar,
             chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")  # fmt: skip
    assert len(made) == 2


def test_vllms_generate_and_chat_arguments_are_taken_at_their_neutral_values(llm):
    # lora_request=None, priority=[0, ...] and the rest were TypeErrors (unknown keywords),
    # even at vLLM's own defaults; the parameters of chat follow vLLM's order.
    greedy = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    (want,) = llm.generate(PROMPT, greedy)
    (out,) = llm.generate(
        PROMPT, greedy, lora_request=None, priority=[0], tokenization_kwargs=None
    )
    assert out.outputs[0].token_ids == want.outputs[0].token_ids
    messages = [{"role": "user", "content": PROMPT}]
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (chat,) = llm.chat(messages, greedy, False, None, template, "string",
                       mm_processor_kwargs={}, tokenization_kwargs={})  # fmt: skip
    assert chat.prompt_token_ids == llm.get_tokenizer().encode(PROMPT, add_special_tokens=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"lora_request": object()}, "merge_and_unload"),
    ({"priority": [1]}, "first come, first served"),
    ({"priority": [0, 0]}, "1 prompts but 2 priorities"),
    ({"tokenization_kwargs": {"add_special_tokens": False}}, "prompt_token_ids"),
])  # fmt: skip
def test_vllms_generate_arguments_this_engine_cannot_honour_are_refused(llm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        llm.generate(PROMPT, SamplingParams(max_tokens=2), **kwargs)
    assert not llm.engine.has_unfinished_requests()
    messages = [{"role": "user", "content": PROMPT}]
    for bad in ({"chat_template_content_format": "json"}, {"mm_processor_kwargs": {"a": 1}}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            llm.chat(messages, SamplingParams(max_tokens=2), **bad)


VLLM_NO_OPS = dict(disable_log_stats=True, disable_log_requests=False, enable_chunked_prefill=True,
                   swap_space=4, kv_cache_dtype="auto", tokenizer_mode="auto",
                   pipeline_parallel_size=1, seed=None, task="generate",
                   max_seq_len_to_capture=8192, cpu_offload_gb=0, revision=None,
                   tokenizer_revision=None, code_revision=None, download_dir=None,
                   quantization=None, hf_overrides=None, compilation_config=None,
                   limit_mm_per_prompt=None)  # fmt: skip


def test_vllms_constructor_keywords_that_change_nothing_are_taken(tiny_models):
    # Each was an "unknown engine option" TypeError, though `serve` takes them as flags.
    llm = LLM(tiny_models["llama"], max_num_seqs=2, **VLLM_NO_OPS)
    try:
        (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=2, ignore_eos=True))
        assert len(out.outputs[0].token_ids) == 2
        assert llm.config.model.seed == 0  # seed=None, as vLLM V1 reads it
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("kwargs,match", [
    ({"enable_chunked_prefill": False}, "always prefilled in chunks"),
    ({"kv_cache_dtype": "fp8"}, "model's dtype"), ({"tokenizer_mode": "slow"}, "fast tokenizer"),
    ({"pipeline_parallel_size": 2}, "tensor_parallel_size"), ({"swap_space": -1}, "recomputed"),
    ({"disable_log_stats": "yes"}, "a bool"), ({"task": "embed"}, "generates text"),
    ({"cpu_offload_gb": 4}, "GPU memory"), ({"max_seq_len_to_capture": -1}, "every context"),
    ({"quantization": "fp8"}, "only None.*no quantization"),
    ({"code_revision": "main"}, "no remote code"),
])  # fmt: skip
def test_vllms_constructor_keywords_asking_for_more_are_refused(tiny_models, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LLM(tiny_models["llama"], **kwargs)


def test_logprobs_past_the_default_cap_are_a_value_error_that_queues_nothing(llm):
    # vLLM's default max_logprobs, 20 (the cap was a constant of 20 before it was an option).
    assert llm.config.model.max_logprobs == 20
    (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=1, logprobs=20, prompt_logprobs=20))
    assert not out.error and len(out.outputs[0].logprobs[0]) >= 20
    fine = SamplingParams(max_tokens=1)
    for name in ("logprobs", "prompt_logprobs"):
        over = SamplingParams(max_tokens=1, **{name: 21})  # the cap is the engine's
        with pytest.raises(ValueError, match=rf"^{name} 21 is more than max_logprobs \(20\)"):
            llm.generate([PROMPT, PROMPT], [fine, over])
        assert not llm.engine.requests  # the first prompt was not queued either


def test_max_logprobs_sets_the_cap_of_generate_and_of_the_engine(tiny_models):
    llm = LLM(tiny_models["llama"], max_num_seqs=2, max_logprobs=2)
    try:
        at_cap = SamplingParams(max_tokens=2, ignore_eos=True, logprobs=2, prompt_logprobs=2)
        (out,) = llm.generate(PROMPT, at_cap)
        assert not out.error
        assert all(2 <= len(e) <= 3 for e in out.outputs[0].logprobs)  # top 2 and the token
        assert all(2 <= len(e) <= 3 for e in out.prompt_logprobs[1:])
        with pytest.raises(ValueError, match=r"logprobs 3 is more than max_logprobs \(2\)"):
            llm.generate(PROMPT, SamplingParams(max_tokens=1, logprobs=3))
        # The engine's own entry (the server's and AsyncEngine's) names the field too.
        with pytest.raises(RequestError, match="--max-logprobs") as refused:
            llm.engine.add_request(PROMPT, SamplingParams(prompt_logprobs=3))
        assert refused.value.param == "prompt_logprobs" and not llm.engine.requests
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("cap", [-1, 10**6])
def test_max_logprobs_minus_one_or_past_the_vocabulary_allows_the_vocabulary(tiny_models, cap):
    # -1 is vLLM's "no cap"; a row's logits hold no more alternatives than the vocabulary,
    # so neither takes more (the sampler's top-k would fail inside the step).
    llm = LLM(tiny_models["llama"], max_num_seqs=2, max_logprobs=cap)
    try:
        vocab = llm.engine.shape.vocab_size
        assert llm.engine.max_logprobs == vocab
        whole = SamplingParams(max_tokens=1, logprobs=vocab, prompt_logprobs=vocab)
        (out,) = llm.generate(PROMPT, whole)
        assert len(out.outputs[0].logprobs[0]) == vocab  # every token, the sampled one too
        assert all(len(e) == vocab for e in out.prompt_logprobs[1:])
        with pytest.raises(ValueError, match=rf"more than the vocabulary's size \({vocab}\)"):
            llm.generate(PROMPT, SamplingParams(max_tokens=1, logprobs=vocab + 1))
        # -1, vLLM's: the whole vocabulary, the same entries as asking for its size.
        minus_one = SamplingParams(max_tokens=1, logprobs=-1, prompt_logprobs=-1)
        (again,) = llm.generate(PROMPT, minus_one)
        assert again.outputs[0].logprobs == out.outputs[0].logprobs
        assert again.prompt_logprobs == out.prompt_logprobs
        assert minus_one.logprobs == -1  # the caller's params are left as they were
    finally:
        llm.engine.shutdown()


def test_minus_one_logprobs_past_the_cap_name_the_vocabulary(llm):
    vocab = llm.engine.shape.vocab_size
    for name in ("logprobs", "prompt_logprobs"):
        whole = SamplingParams(max_tokens=1, **{name: -1})
        match = rf"^{name} -1 \(the whole vocabulary, {vocab} tokens\) is more than max_logprobs"
        with pytest.raises(ValueError, match=match):
            llm.generate(PROMPT, whole)
        assert not llm.engine.requests
        with pytest.raises(ValueError, match="must be an integer >= 0, -1"):
            SamplingParams(**{name: -2})


@pytest.mark.parametrize("value,match", [
    (-2, r"max_logprobs must be >= 0, or -1 for no cap"), (-100, "got -100"),
    ("20", "max_logprobs must be an integer"), (True, "max_logprobs must be an integer"),
    (None, "max_logprobs must be set"),
])  # fmt: skip
def test_bad_max_logprobs_are_refused_before_the_model_loads(value, match):
    with pytest.raises(ValueError, match=match):
        LLM("/no/such/model", max_logprobs=value)  # a load would fail on the path instead


def test_disable_custom_all_reduce_is_taken_and_reaches_the_worker(tiny_models, monkeypatch):
    # vLLM's keyword was a TypeError. One rank has no custom all-reduce, so what is checked
    # here is that the worker asks for none; the TP=2 GPU test checks the NCCL-only run.
    from sarathi.model_executor.parallel import TPGroup

    asked = []
    real = TPGroup.with_symmetric_all_reduce

    def record(self, *args, **kwargs):
        asked.append(kwargs["disabled"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TPGroup, "with_symmetric_all_reduce", record)
    for value in (False, True):
        llm = LLM(tiny_models["llama"], max_num_seqs=2, disable_custom_all_reduce=value)
        try:
            assert llm.config.parallel.disable_custom_all_reduce is value
            (out,) = llm.generate(PROMPT, SamplingParams(max_tokens=2, ignore_eos=True))
            assert len(out.outputs[0].token_ids) == 2
        finally:
            llm.engine.shutdown()
    assert asked == [False, True]
    with pytest.raises(ValueError, match="disable_custom_all_reduce must be True or False"):
        LLM(tiny_models["llama"], disable_custom_all_reduce="yes")


def test_a_batch_queues_its_longest_budgets_first_and_answers_in_prompt_order(
    llm, monkeypatch
):
    # A long output queued last would decode alone at the end of the batch, a few tokens
    # a step; queued first it decodes beside the others.
    engine = llm.engine
    add = engine.add_request
    budgets = []

    def record(prompt, params, **kwargs):
        budgets.append(params.max_tokens)
        return add(prompt, params, **kwargs)

    prompts = [PROMPT, "The capital of France", "One two three", "Once upon a time"]
    params = [
        SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (2, 7, 4, 7)
    ]
    monkeypatch.setattr(engine, "add_request", record)
    outs = llm.generate(prompts, params)
    monkeypatch.undo()
    assert budgets == [7, 7, 4, 2]
    assert [len(o.outputs[0].token_ids) for o in outs] == [2, 7, 4, 7]
    for prompt, p, out in zip(prompts, params, outs, strict=True):
        (alone,) = llm.generate(prompt, p)
        assert out.prompt == prompt
        assert out.outputs[0].token_ids == alone.outputs[0].token_ids


def test_an_unbounded_budget_is_queued_before_any_number():
    from sarathi.entrypoints.llm import _longest_first

    params = [SamplingParams(max_tokens=n) for n in (5, None, 9, 5)]
    assert _longest_first(params) == [1, 2, 0, 3]


def test_request_ids_are_vllms_counts_and_skip_ids_held_through_the_engine(llm):
    # vLLM scripts sort outputs by int(out.request_id); "generate-0" raised there.
    params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    first = [int(o.request_id) for o in llm.generate([PROMPT, PROMPT], params)]
    assert first[1] == first[0] + 1
    held = str(first[1] + 1)
    llm.engine.add_request(PROMPT, params, request_id=held)
    try:
        outs = llm.generate([PROMPT, PROMPT], params)
        assert [o.request_id for o in outs] == [str(first[1] + 2), str(first[1] + 3)]
        assert all(o.error is None and len(o.outputs[0].token_ids) == 2 for o in outs)
    finally:
        llm.engine.abort_request(held)


def test_dtype_may_be_a_torch_dtype_as_in_vllm():
    # LLM(dtype=torch.bfloat16) was refused as "not one of auto, float32, ...".
    import torch

    from sarathi.config import EngineConfig

    for given, name in ((torch.float16, "float16"), (torch.bfloat16, "bfloat16"),
                        (torch.float, "float32")):  # fmt: skip
        assert EngineConfig.from_kwargs(dtype=given).model.dtype == name
    with pytest.raises(ValueError, match="dtype must be one of .*'float64'"):
        EngineConfig.from_kwargs(dtype=torch.float64)
