"""The official openai client against a live server: completions and chat, streaming or not."""

from __future__ import annotations

import pytest

from live_server import MAX_MODEL_LEN

PROMPTS = ["Hello, my name is", "The capital of France", "def fib(n):"]


@pytest.fixture(scope="module")
def offline():
    from sarathi import LLM

    return LLM(model="demo", max_model_len=MAX_MODEL_LEN)


def test_models_lists_the_demo_model_as_random(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["demo"]
    assert "random weights" in models[0].model_extra["description"]
    assert models[0].model_extra["max_model_len"] == MAX_MODEL_LEN


def test_greedy_completions_equal_offline_generate(client, offline):
    from sarathi import SamplingParams

    expected = offline.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=12))
    got = client.completions.create(model="demo", prompt=PROMPTS, max_tokens=12, temperature=0)
    assert [c.index for c in got.choices] == [0, 1, 2]
    assert [c.text for c in got.choices] == [o.outputs[0].text for o in expected]
    assert [c.finish_reason for c in got.choices] == [o.outputs[0].finish_reason for o in expected]
    n_out = sum(len(o.outputs[0].token_ids) for o in expected)
    n_in = sum(len(o.prompt_token_ids) for o in expected)
    assert got.usage.completion_tokens == n_out
    assert got.usage.prompt_tokens == n_in
    assert got.usage.total_tokens == n_in + n_out
    assert got.id.startswith("cmpl-") and got.object == "text_completion" and got.created > 0


def test_greedy_chat_equals_offline_generate_on_the_template(client, http, offline):
    from sarathi import SamplingParams

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ids = http.post("/tokenize", json={"model": "demo", "messages": messages}).json()["tokens"]
    expected = offline.generate([ids], SamplingParams(temperature=0, max_tokens=10))[0]
    got = client.chat.completions.create(
        model="demo", messages=messages, max_tokens=10, temperature=0
    )
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == expected.outputs[0].text
    assert got.usage.prompt_tokens == len(ids)
    assert got.usage.completion_tokens == len(expected.outputs[0].token_ids)
    assert got.id.startswith("chatcmpl-") and got.object == "chat.completion"


def test_streamed_completion_concatenates_to_the_full_one(client):
    kw = dict(model="demo", prompt="Once upon a time", max_tokens=20, temperature=0)
    full = client.completions.create(**kw)
    chunks = list(
        client.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [full.choices[0].finish_reason]
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    )


def test_streamed_chat_starts_with_a_role_chunk(client):
    kw = dict(
        model="demo",
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=15,
        temperature=0,
    )
    full = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_n_greater_than_one_with_seed(client):
    kw = dict(model="demo", prompt="abc", n=3, max_tokens=8, temperature=1.0, seed=7, logprobs=1)
    got = client.completions.create(**kw)
    again = client.completions.create(**kw)
    assert sorted(c.index for c in got.choices) == [0, 1, 2]
    assert [c.text for c in got.choices] == [c.text for c in again.choices]
    assert got.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in got.choices)
    assert len({c.text for c in got.choices}) > 1  # the n samples differ
    chat = client.chat.completions.create(
        model="demo", n=2, max_tokens=5, seed=3, messages=[{"role": "user", "content": "x"}]
    )
    assert sorted(c.index for c in chat.choices) == [0, 1]
    chunks = list(
        client.chat.completions.create(
            model="demo",
            n=2,
            max_tokens=5,
            seed=3,
            stream=True,
            messages=[{"role": "user", "content": "x"}],
        )
    )
    for i in range(2):
        text = "".join(
            c.choices[0].delta.content or ""
            for c in chunks
            if c.choices and c.choices[0].index == i
        )
        assert text == chat.choices[i].message.content


def test_stop_string_ends_the_completion(client):
    base = client.completions.create(
        model="demo", prompt="The", max_tokens=30, temperature=0, extra_body={"ignore_eos": True}
    )
    text = base.choices[0].text
    stop = text[5:8]
    assert stop.strip(), text
    got = client.completions.create(
        model="demo",
        prompt="The",
        max_tokens=30,
        temperature=0,
        stop=[stop],
        extra_body={"ignore_eos": True},
    )
    assert got.choices[0].finish_reason == "stop"
    assert got.choices[0].text == text[: text.index(stop)]
    assert stop not in got.choices[0].text


def test_completion_logprobs(client):
    got = client.completions.create(
        model="demo", prompt="Hello", max_tokens=6, temperature=0, logprobs=3
    )
    lp = got.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs)
    # Greedy: the chosen token is the most likely one.
    assert all(abs(max(t.values()) - v) < 1e-4 for t, v in zip(lp.top_logprobs, lp.token_logprobs))
    assert "".join(lp.tokens) == got.choices[0].text or len(lp.text_offset) == 6


def test_chat_logprobs_and_top_logprobs(client):
    got = client.chat.completions.create(
        model="demo",
        max_tokens=5,
        temperature=0,
        messages=[{"role": "user", "content": "Hi"}],
        logprobs=True,
        top_logprobs=2,
    )
    content = got.choices[0].logprobs.content
    assert len(content) == 5
    for tok in content:
        assert tok.logprob <= 0 and len(tok.top_logprobs) == 2
        assert tok.top_logprobs[0].logprob >= tok.top_logprobs[1].logprob
    streamed = list(
        client.chat.completions.create(
            model="demo",
            max_tokens=5,
            temperature=0,
            stream=True,
            logprobs=True,
            top_logprobs=2,
            messages=[{"role": "user", "content": "Hi"}],
        )
    )
    n = sum(
        len(c.choices[0].logprobs.content) for c in streamed if c.choices and c.choices[0].logprobs
    )
    assert n == 5


def test_echo_and_token_id_prompts(client, http):
    ids = http.post("/tokenize", json={"prompt": "Hello there"}).json()["tokens"]
    by_ids = client.completions.create(model="demo", prompt=ids, max_tokens=4, temperature=0)
    by_text = client.completions.create(
        model="demo", prompt="Hello there", max_tokens=4, temperature=0, echo=True
    )
    assert by_text.choices[0].text == "Hello there" + by_ids.choices[0].text
    batch = client.completions.create(model="demo", prompt=[ids, ids], max_tokens=4, temperature=0)
    assert [c.text for c in batch.choices] == [by_ids.choices[0].text] * 2


def test_max_completion_tokens_and_usage_everywhere(client):
    got = client.chat.completions.create(
        model="demo",
        max_completion_tokens=3,
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"ignore_eos": True},
    )
    assert got.usage.completion_tokens == 3 and got.choices[0].finish_reason == "length"


def test_tokenize_detokenize_version_health(http):
    tok = http.post("/tokenize", json={"model": "demo", "prompt": "Hello world"}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == MAX_MODEL_LEN
    back = http.post("/detokenize", json={"model": "demo", "tokens": tok["tokens"]}).json()
    assert back["prompt"] == "Hello world"
    assert http.get("/version").json()["version"]
    assert http.get("/health").status_code == 200


def test_metrics_exposes_the_vllm_style_names(client, http):
    client.completions.create(model="demo", prompt="metrics", max_tokens=3)
    text = http.get("/metrics").text
    for name in (
        "sarathi:num_requests_running",
        "sarathi:num_requests_waiting",
        "sarathi:time_to_first_token_seconds_bucket",
        "sarathi:inter_token_latency_seconds_bucket",
        "sarathi:e2e_request_latency_seconds_count",
        "sarathi:prompt_tokens_total",
        "sarathi:generation_tokens_total",
        "sarathi:num_preemptions_total",
        "sarathi:request_success_total",
        "sarathi:kv_cache_mapped_bytes",
        "sarathi:kv_cache_used_bytes",
        "sarathi:kv_cache_pages_free",
        # At 0 before any refusal, as request_success_total's reasons are, so an alert on
        # its rate has a series to read (a labelled counter shows no series until used).
        'sarathi:num_requests_rejected_total{model_name="demo",reason="overloaded"} 0.0',
        'sarathi:request_success_total{finished_reason="error",model_name="demo"}',
    ):
        assert name in text, name


def test_metrics_prefix_vllm_gives_vllms_names():
    """--metrics-prefix vllm: dashboards and alerts written for vLLM read the same series."""
    import httpx

    from live_server import start_server, stop_server

    live = start_server(metrics_prefix="vllm")
    try:
        with httpx.Client(base_url=live.url, timeout=60) as h:
            assert h.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200
            text = h.get("/metrics").text
    finally:
        stop_server(live)
    for name in (
        'vllm:num_requests_running{model_name="demo"}',
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:kv_cache_usage_perc",
        'vllm:gpu_cache_usage_perc{model_name="demo"}',  # vLLM's example dashboard plots it
        'vllm:request_success_total{finished_reason="length",model_name="demo"} 1.0',
    ):
        assert name in text, name
    assert "sarathi:" not in text
    # Load balancers size a replica from this info series: blocks times tokens per block.
    from prometheus_client.parser import text_string_to_metric_families

    (info,) = [f for f in text_string_to_metric_families(text) if f.name == "vllm:cache_config_info"]
    (sample,) = info.samples
    assert sample.value == 1
    capacity = int(sample.labels["num_gpu_blocks"]) * int(sample.labels["block_size"])
    assert capacity >= MAX_MODEL_LEN
    assert sample.labels["enable_prefix_caching"] in ("True", "False")


def _samples(text: str) -> dict[str, float]:
    """The samples of a /metrics page, by name (labels dropped: one model, one series)."""
    from prometheus_client.parser import text_string_to_metric_families

    got: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "le" not in s.labels and "finished_reason" not in s.labels:
                got[s.name] = s.value
    return got


def test_metrics_per_request_histograms_vllm_dashboards_read():
    """vLLM's dashboard reads the finished requests' prompt and generation lengths and their
    prefill / decode times; each is observed once per finished request."""
    import httpx

    from live_server import start_server, stop_server

    live = start_server(metrics_prefix="vllm")
    try:
        with httpx.Client(base_url=live.url, timeout=60) as h:
            ids = h.post("/tokenize", json={"prompt": "histograms"}).json()["tokens"]
            body = {"prompt": "histograms", "max_tokens": 5, "n": 2, "ignore_eos": True}
            assert h.post("/v1/completions", json=body).status_code == 200
            got = _samples(h.get("/metrics").text)
    finally:
        stop_server(live)
    assert got["vllm:request_prompt_tokens_count"] == 1
    assert got["vllm:request_prompt_tokens_sum"] == len(ids)
    assert got["vllm:request_generation_tokens_sum"] == 10  # both choices
    assert got["vllm:request_max_num_generation_tokens_sum"] == 5
    assert got["vllm:request_params_n_sum"] == 2
    assert got["vllm:request_params_max_tokens_count"] == 1
    assert got["vllm:request_params_max_tokens_sum"] == 5
    for phase in ("prefill", "decode", "inference"):
        assert got[f"vllm:request_{phase}_time_seconds_count"] == 1, phase
    prefill = got["vllm:request_prefill_time_seconds_sum"]
    decode = got["vllm:request_decode_time_seconds_sum"]
    assert prefill > 0 and decode > 0
    assert got["vllm:request_inference_time_seconds_sum"] == pytest.approx(prefill + decode)
    assert got["vllm:request_inference_time_seconds_sum"] <= (
        got["vllm:e2e_request_latency_seconds_sum"]
    )
    # The batch-size heatmap: every step's tokens, the prompt once per choice (prefilled
    # or found in the prefix cache) and each choice's 4 decodes after its first token.
    assert got["vllm:iteration_tokens_total_count"] >= 2  # a prefill, then decodes
    assert len(ids) + 8 <= got["vllm:iteration_tokens_total_sum"] <= 2 * len(ids) + 8


def test_the_readme_client_examples_run(client, capsys):
    """The README's drop-in examples, verbatim, against a live server."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("its structure is real:\n\n```python\n", 1)[1].split("```", 1)[0]
    exec(block, {"client": client})
    out = capsys.readouterr().out
    assert "get_weather" in out and "CompletionUsage" in out
