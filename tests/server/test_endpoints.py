"""Endpoints real clients probe: a model by id, the tokenizer's description, CORS, endpoints
this server does not serve, and the scoring idiom (echo with max_tokens 0 or 1)."""

from __future__ import annotations

import json

import pytest

from live_server import API_KEY, MAX_MODEL_LEN, start_server, stop_server


def test_a_model_by_id(client):
    import openai

    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4")


def test_tokenizer_info_describes_the_tokenizer(http, server):
    info = http.get("/tokenizer_info").json()
    tok = server.engine.engine.tokenizer
    assert info["eos_token"] == tok.eos_token and info["vocab_size"] == len(tok)
    assert info["chat_template"] and "<|im_start|>" in info["chat_template"]
    assert "adaptivocab" not in info
    assert "/" not in str(info.get("name_or_path", ""))  # no filesystem path


def test_endpoints_not_served_say_so(client, http):
    import openai

    with pytest.raises(openai.NotFoundError, match="not an endpoint of this server"):
        client.embeddings.create(model="demo", input="hi")
    r = http.post("/v1/images/generations", json={"prompt": "x"})
    err = r.json()["error"]
    assert r.status_code == 404 and err["code"] == "unsupported_endpoint"
    assert "/v1/chat/completions" in err["message"]
    r = http.get("/v1/completions")
    assert r.status_code == 405 and "not a method" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
def test_content_parts_this_model_cannot_take_are_named(http, part):
    body = {"messages": [{"role": "user", "content": [part]}], "max_tokens": 2}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert part["type"] in message and "text only" in message


def test_an_assistants_refusal_part_is_its_text(http):
    """OpenAI's assistant messages may carry refusal parts (a client sends the conversation
    back as it came); the template sees the refusal as the message's text."""
    refused = [{"type": "refusal", "refusal": "I cannot help with that."}]
    as_parts = [{"role": "assistant", "content": refused}, {"role": "user", "content": "ok"}]
    as_text = [
        {"role": "assistant", "content": "I cannot help with that."},
        {"role": "user", "content": "ok"},
    ]
    r = http.post("/tokenize", json={"messages": as_parts})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == http.post("/tokenize", json={"messages": as_text}).json()["tokens"]
    body = {"messages": as_parts, "max_tokens": 2}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    # Only the model refuses: a user message with a refusal part is a mistake.
    body = {"messages": [{"role": "user", "content": refused}], "max_tokens": 2}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "refusal" in r.json()["error"]["message"]


def test_text_parts_join_on_a_newline_as_vllms(http):
    """A message's text parts reach the template joined by a newline, as vLLM joins them, so
    clients moving over get the same prompts."""
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "Describe"},
                                             {"type": "text", "text": "this"}]}]  # fmt: skip
    as_text = [{"role": "user", "content": "Describe\nthis"}]
    r = http.post("/tokenize", json={"messages": as_parts})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == http.post("/tokenize", json={"messages": as_text}).json()["tokens"]


def test_tokenize_returns_token_strings_when_asked_as_vllms(http, server):
    """vLLM's return_token_strs: the tokenizer's string of each id (clients split a rendered
    chat prompt with them); without it, token_strs is null."""
    tok = server.engine.engine.tokenizer
    for body in ({"prompt": "Hello world"}, {"messages": [{"role": "user", "content": "Hi"}]}):
        r = http.post("/tokenize", json={**body, "return_token_strs": True})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["token_strs"] == tok.convert_ids_to_tokens(out["tokens"])
        assert len(out["token_strs"]) == out["count"] > 0
        assert http.post("/tokenize", json=body).json()["token_strs"] is None


def test_tokenize_refuses_a_prompt_and_messages_together(http):
    """Each form of /tokenize validates with the other's field as an extra: the messages
    were tokenized and the prompt dropped in silence."""
    body = {"prompt": "Hello world", "messages": [{"role": "user", "content": "Hi"}]}
    r = http.post("/tokenize", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] in ("prompt", "messages") and "not both" in err["message"], err


def test_tokenize_counts_text_longer_than_the_context_could_hold(http, server, monkeypatch):
    """/tokenize counts, it runs nothing: a document too long for the context (in bytes,
    which completions refuse unread) is counted, as vLLM counts it, so that callers can
    chunk it by the count. The body limit still bounds it, and such text is tokenized on a
    thread of its own (six 3.9 MB ones held every default thread, and every other request,
    13 s)."""
    import threading

    tok = server.app.state.sarathi.tokenizer
    threads = []
    encode = tok.encode

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return encode(*args, **kwargs)

    monkeypatch.setattr(tok, "encode", recorded)
    assert http.post("/tokenize", json={"prompt": "short"}).status_code == 200
    text = "hello " * 30_000
    r = http.post("/tokenize", json={"prompt": text})
    assert len(threads) == 2 and not threads[0].startswith("sarathi-long-text")
    assert threads[1].startswith("sarathi-long-text"), threads
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) > body["max_model_len"]
    r = http.post("/tokenize", json={"messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200 and r.json()["count"] > body["count"], r.text
    r = http.post("/v1/completions", json={"prompt": text, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"

def test_tokenize_counts_a_chat_request_body_as_it_would_be_sent(http):
    """Clients count a chat request's prompt by sending its body to /tokenize: fields of the
    output there (tool_choice, max_completion_tokens, top_logprobs) do not change the prompt
    and were refused as another route's ("tool calling is available on /v1/chat/completions
    only"); what would change it (a per-request template, documents) is still refused."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    base = {"messages": [{"role": "user", "content": "Hi"}], "tools": tools}
    want = http.post("/tokenize", json=base).json()["tokens"]
    output_fields = {"tool_choice": "required", "max_completion_tokens": 5, "logprobs": True,
                     "top_logprobs": 2, "max_tokens": 5, "response_format": {"type": "json_object"}}
    r = http.post("/tokenize", json={**base, **output_fields})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == want
    r = http.post("/tokenize", json={**base, "chat_template": "{{ messages }}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template", r.text


# A RAG template's way with documents (Command-R's and Granite's take them likewise).
DOCS_TEMPLATE = (
    "{% for d in documents or [] %}[{{ d.title }}: {{ d.text }}]{% endfor %}"
    "{{ messages[-1]['content'] }}"
)


def test_documents_reach_the_chat_template(http, server, monkeypatch):
    """vLLM's documents (retrieved passages for RAG templates) are the template's
    ``documents``, on chat and /tokenize; they were refused as not supported."""
    monkeypatch.setattr(server.app.state.sarathi, "chat_template", DOCS_TEMPLATE)
    tok = server.engine.engine.tokenizer
    body = {"messages": [{"role": "user", "content": "Hi"}],
            "documents": [{"title": "a", "text": "one"}, {"title": "b", "text": "two"}]}
    r = http.post("/tokenize", json=body)
    assert r.status_code == 200, r.text
    assert tok.decode(r.json()["tokens"]) == "[a: one][b: two]Hi"
    r = http.post("/v1/chat/completions", json={**body, "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len(tok.encode("[a: one][b: two]Hi"))
    for bad in ([{"text": 1}], "one", [["one"]]):
        r = http.post("/v1/chat/completions", json={**body, "documents": bad})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("documents"), r.text
        assert http.post("/tokenize", json={**body, "documents": bad}).status_code == 400


# Qwen3's way with an earlier turn's reasoning: a <think> block before the reply.
REASONING_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}:"
    "{% if m.reasoning_content is string %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{% if m.reasoning is string %}[{{ m.reasoning }}]{% endif %}{{ m.content }};{% endfor %}"
)


def test_an_assistants_reasoning_reaches_the_chat_template(http, server, monkeypatch):
    """An assistant message's reasoning (vLLM's ``reasoning``, or its older name
    ``reasoning_content``, which clients still send back) is the template's, under both
    names, as vLLM gives it; Qwen3's template renders it as a <think> block. It was
    accepted and dropped. As in vLLM, only an assistant message carries it."""
    monkeypatch.setattr(server.app.state.sarathi, "chat_template", REASONING_TEMPLATE)
    tok = server.engine.engine.tokenizer
    want = "user:Hi;assistant:<think>r1</think>[r1]Hello;user:More;"
    for key in ("reasoning", "reasoning_content"):
        messages = [
            {"role": "user", "content": "Hi", key: "ignored"},
            {"role": "assistant", "content": "Hello", key: "r1"},
            {"role": "user", "content": "More"},
        ]
        body = {"messages": messages, "add_generation_prompt": False}
        r = http.post("/tokenize", json=body)
        assert r.status_code == 200, r.text
        assert tok.decode(r.json()["tokens"]) == want
        r = http.post("/v1/chat/completions", json={**body, "max_tokens": 1})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(tok.encode(want))
    # Both sent: reasoning wins, as vLLM reads it.
    both = {"role": "assistant", "content": "Hello", "reasoning": "r1", "reasoning_content": "x"}
    body = {"messages": [{"role": "user", "content": "Hi"}, both,
                         {"role": "user", "content": "More"}], "add_generation_prompt": False}  # fmt: skip
    assert tok.decode(http.post("/tokenize", json=body).json()["tokens"]) == want
    bad = {"messages": [{"role": "assistant", "content": "a", "reasoning": 1}]}
    r = http.post("/v1/chat/completions", json=bad)
    assert r.status_code == 400 and "reasoning" in r.json()["error"]["param"], r.text


def test_n_goes_up_to_openais_bound(http):
    """OpenAI takes n up to 128 (pass@k evaluations ask for dozens): more samples than the
    server runs at once wait their turn; a request's prompts x n stay within 128."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    r = http.post("/v1/chat/completions", json={**body, "n": 40})
    assert r.status_code == 200, r.text
    assert sorted(c["index"] for c in r.json()["choices"]) == list(range(40))
    assert http.post("/v1/chat/completions", json={**body, "n": 129}).status_code == 400
    many = {"prompt": ["a", "b"], "max_tokens": 1}
    assert http.post("/v1/completions", json={**many, "n": 65}).status_code == 400


def test_chat_logprobs_carry_each_tokens_own_bytes(client, server):
    """A byte-level token that is part of a character decodes to U+FFFD; its bytes must be
    its own."""
    tok = server.engine.engine.tokenizer
    partial = next(
        i for i in range(len(tok)) if tok.decode([i]) == "\ufffd" and i > 2
    )
    r = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "x"}], max_tokens=1,
        temperature=0, logprobs=True, top_logprobs=2, logit_bias={str(partial): 100},
    )
    (entry,) = r.choices[0].logprobs.content
    assert entry.token == "\ufffd" and len(entry.bytes) == 1 and entry.bytes != [239, 191, 189]
    for top in entry.top_logprobs:
        assert top.bytes


def test_scoring_a_prompt_as_lm_eval_does(http):
    """lm-eval's loglikelihood: token-id prompts, echo, logprobs 1, max_tokens 1 (or 0)."""
    prompts = [[74, 75, 330, 331], [500, 501]]
    for max_tokens in (1, 0):
        r = http.post("/v1/completions", json={
            "model": "demo", "prompt": prompts, "max_tokens": max_tokens, "logprobs": 1,
            "echo": True, "temperature": 0, "seed": 1234,
        })
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["usage"]["completion_tokens"] == max_tokens * len(prompts)
        for choice, prompt in zip(sorted(body["choices"], key=lambda c: c["index"]), prompts):
            lp = choice["logprobs"]
            assert len(lp["token_logprobs"]) == len(prompt) + max_tokens
            assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
            for value, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
                # The most likely token and the prompt's own (lm-eval's is_greedy compares them).
                assert value <= 0 and 1 <= len(top) <= 2 and max(top.values()) >= value - 1e-6
    r = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_scoring_a_prompt_streamed(client):
    chunks = list(client.completions.create(
        model="demo", prompt="the cache", max_tokens=0, echo=True, logprobs=0, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "the cache"
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.fixture(scope="module")
def cors_server():
    live = start_server(api_key=API_KEY, allowed_origins=["https://app.example"],
                        allowed_methods=["GET", "POST"], allowed_headers=["*"],
                        allow_credentials=False)
    yield live
    stop_server(live)


def test_cors_preflight_is_answered_before_the_api_key(cors_server, server):
    import httpx

    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(cors_server.url + "/v1/chat/completions", headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = httpx.get(cors_server.url + "/v1/models", headers={
        "Origin": "https://app.example", "Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(cors_server.url + "/v1/models", headers={
        **preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # Without --allowed-origins: no CORS at all.
    r = httpx.options(server.url + "/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in r.headers


def test_cached_prompt_tokens_in_usage():
    """With --enable-prompt-tokens-details (vLLM's flag) usage says how many prompt tokens
    the prefix cache served; the Responses API always does. Without the flag, nothing."""
    import openai

    live = start_server(enable_prompt_tokens_details=True)
    try:
        client = openai.OpenAI(base_url=live.base_url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "A long shared question about caching. " * 8}]
        kw = dict(model="demo", messages=messages, max_tokens=2)
        first = client.chat.completions.create(**kw)
        again = client.chat.completions.create(**kw)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        assert 0 < again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens
        chunks = list(
            client.chat.completions.create(
                **kw, stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0
        prompt = "Completions share the cache too, token for token. " * 6
        client.completions.create(model="demo", prompt=prompt, max_tokens=2)
        done = client.completions.create(model="demo", prompt=[prompt, prompt], max_tokens=2)
        assert done.usage.prompt_tokens_details.cached_tokens > 0
        text = "The Responses API reports cached input tokens always. " * 6
        client.responses.create(model="demo", input=text, max_output_tokens=16)
        resp = client.responses.create(model="demo", input=text, max_output_tokens=16)
        assert resp.usage.input_tokens_details.cached_tokens > 0
    finally:
        stop_server(live)


def test_no_prompt_tokens_details_without_the_flag(client):
    out = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert out.usage.prompt_tokens_details is None


def test_cache_salt_is_taken_and_checked(http):
    body = {"model": "demo", "prompt": "hello", "max_tokens": 1, "cache_salt": "tenant-a"}
    assert http.post("/v1/completions", json=body).status_code == 200
    r = http.post("/v1/completions", json={**body, "cache_salt": ""})
    assert r.status_code == 400 and "cache_salt" in r.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_cache_salt_keeps_responses_apart(client, stream):
    """/v1/responses takes cache_salt as chat does: a response shares cached prompt blocks
    only with requests of the same salt (it reports cached tokens always)."""

    def cached(salt: str) -> int:
        kw = dict(
            model="demo",
            input="A prompt for salted responses. " * 6,
            max_output_tokens=16,
            extra_body={"cache_salt": f"{salt}-{stream}"},  # apart from the other case's
        )
        if not stream:
            return client.responses.create(**kw).usage.input_tokens_details.cached_tokens
        events = list(client.responses.create(**kw, stream=True))
        return events[-1].response.usage.input_tokens_details.cached_tokens

    assert cached("tenant-a") == 0
    assert cached("tenant-a") > 0
    assert cached("tenant-b") == 0


def test_reset_prefix_cache(http, server):
    """vLLM's POST /reset_prefix_cache drops the cached blocks no request uses."""
    body = {"model": "demo", "prompt": "Reset me: a prompt long enough to fill blocks. " * 4}
    http.post("/v1/completions", json={**body, "max_tokens": 1})
    r = http.post("/reset_prefix_cache")
    assert r.status_code == 200 and r.json()["dropped_blocks"] > 0
    assert server.engine.engine.prefix_cache.num_cached == 0
    again = http.post("/v1/completions", json={**body, "max_tokens": 1}).json()
    assert again["choices"][0]["text"] is not None
    assert http.post("/reset_prefix_cache").json()["dropped_blocks"] > 0
    metrics = http.get("/metrics").text
    assert 'sarathi:prefix_cache_evictions_total{model_name="demo"}' in metrics
    assert 'sarathi:prefix_cache_hits_total{model_name="demo"}' in metrics
    # As vLLM's: no "_created" series beside each counter and histogram.
    assert "_created" not in metrics and "sarathi:e2e_request_latency_seconds_count" in metrics


def test_truncate_prompt_tokens_keeps_the_prompts_last_tokens_as_vllm(http):
    """vLLM's truncate_prompt_tokens (left truncation, before the prompt's length is
    checked; usage counts the tokens kept) was refused as "not supported", though the offline
    SamplingParams takes it."""
    ids = list(range(5, 5 + MAX_MODEL_LEN + 40))  # longer than the context
    body = {"max_tokens": 3, "temperature": 0, "ignore_eos": True}
    r = http.post("/v1/completions", json={**body, "prompt": ids, "truncate_prompt_tokens": 10})
    assert r.status_code == 200, r.text
    cut = http.post("/v1/completions", json={**body, "prompt": ids[-10:]}).json()
    assert r.json()["choices"][0]["text"] == cut["choices"][0]["text"]
    assert r.json()["usage"]["prompt_tokens"] == 10
    # -1: as many as the context takes with room for one generated token (as offline).
    r = http.post("/v1/completions", json={
        **body, "max_tokens": 1, "prompt": ids, "truncate_prompt_tokens": -1})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == MAX_MODEL_LEN - 1
    # A k the context cannot hold is the usual overflow.
    r = http.post("/v1/completions", json={
        **body, "prompt": ids, "truncate_prompt_tokens": MAX_MODEL_LEN})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_truncate_prompt_tokens_on_text_and_chat(http):
    # Text too long in bytes for the context is tokenized, not refused unread, when it is
    # to be cut; echo shows the tokens the model saw.
    r = http.post("/v1/completions", json={
        "prompt": "word " * 20_000, "truncate_prompt_tokens": 8, "max_tokens": 1})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 8, r.text
    text = "alpha beta gamma " * 20
    ids = http.post("/tokenize", json={"prompt": text}).json()["tokens"]
    tail = http.post("/detokenize", json={"tokens": ids[-8:]}).json()["prompt"]
    r = http.post("/v1/completions", json={
        "prompt": text, "truncate_prompt_tokens": 8, "max_tokens": 2, "echo": True,
        "logprobs": 0})
    choice = r.json()["choices"][0]
    assert choice["text"].startswith(tail) and len(choice["logprobs"]["tokens"]) == 10
    # The prompt's tokens spell the echoed prompt; the two sampled ones may be parts of one
    # character (each then shows as U+FFFD, the text as one), so they are left out.
    assert "".join(choice["logprobs"]["tokens"][:8]) == tail
    long_chat = [{"role": "user", "content": "word " * 2000}]
    for stream in (False, True):
        r = http.post("/v1/chat/completions", json={
            "messages": long_chat, "truncate_prompt_tokens": 20, "max_tokens": 2,
            "stream": stream, "stream_options": {"include_usage": True} if stream else None})
        assert r.status_code == 200, r.text
        if stream:
            last = [line for line in r.text.splitlines() if line.startswith("data: {")][-1]
            usage = json.loads(last[len("data: "):])["usage"]
        else:
            usage = r.json()["usage"]
        assert usage["prompt_tokens"] == 20, usage


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("value", [0, -2, "5", True, 1.5])
def test_a_bad_truncate_prompt_tokens_is_400(http, route, value):
    body = {"prompt": "hi"} if route == "/v1/completions" else {
        "messages": [{"role": "user", "content": "hi"}]}
    r = http.post(route, json={**body, "max_tokens": 2, "truncate_prompt_tokens": value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "truncate_prompt_tokens" and "truncate_prompt_tokens" in err["message"]


def test_the_callers_request_id_names_its_response_as_vllms(http):
    """vLLM's response id is the prefix and the caller's X-Request-Id, else its body's
    request_id; the field was taken and dropped, so a caller could not find its id."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    compl = {"prompt": "hi", "max_tokens": 2}
    for path, body, prefix in (
        ("/v1/chat/completions", chat, "chatcmpl"),
        ("/v1/completions", compl, "cmpl"),
    ):
        r = http.post(path, json={**body, "request_id": "mine-1"})
        assert r.status_code == 200 and r.json()["id"] == f"{prefix}-mine-1", r.text
        r = http.post(path, json={**body, "request_id": "mine-1"}, headers={"X-Request-Id": "hdr"})
        assert r.json()["id"] == f"{prefix}-hdr", r.text
        with http.stream("POST", path, json={**body, "request_id": "s", "stream": True}) as s:
            events = [json.loads(e[6:]) for e in s.iter_lines() if e.startswith("data: {")]
        assert events and {e["id"] for e in events} == {f"{prefix}-s"}
        assert http.post(path, json=body).json()["id"].startswith(f"{prefix}-")
        r = http.post(path, json={**body, "request_id": 5})
        assert r.status_code == 400 and r.json()["error"]["param"] == "request_id", r.text


def test_callers_may_send_the_same_request_id_at_once(http):
    """The engine's ids stay the server's own: a second request with a running one's id
    must not replace it in the engine."""
    body = {"prompt": "hi", "max_tokens": 8, "ignore_eos": True, "request_id": "same"}
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/completions", json=streamed) as s:
        lines = s.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        r = http.post("/v1/completions", json=body)
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8, r.text
    assert rest[-2]["choices"][0]["finish_reason"] == "length"
    assert rest[-1]["usage"]["completion_tokens"] == 8
