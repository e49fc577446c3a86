"""Client mistakes get OpenAI-shaped 4xx answers, never a 500 or a traceback."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from live_server import (
    API_KEY,
    MAX_MODEL_LEN,
    health_answers_during,
    start_server,
    stop_server,
)

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


def _assert_error(resp: httpx.Response, status: int, param: str | None = "?") -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if param != "?":
        assert err["param"] == param, err
    return err


BAD_BODIES = [
    (COMPL, {"prompt": "x", "max_tokens": -1}, "max_tokens"),
    (COMPL, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    (COMPL, {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    (COMPL, {"prompt": 5}, "prompt"),
    (COMPL, {"prompt": [-1]}, "prompt"),
    (COMPL, {"prompt": "x", "stop": 5}, "stop"),
    ("/tokenize", {}, None),
    (COMPL, {"prompt": [[]]}, "?"),
    (COMPL, {"prompt": ""}, "prompt"),
    (COMPL, {"prompt": [10**6]}, "?"),
    (COMPL, {"prompt": "x", "n": 100000}, "n"),
    (COMPL, {"prompt": ["x"] * 20, "n": 16}, "n"),
    (COMPL, {"prompt": "x", "temperature": -1}, "temperature"),
    (COMPL, {"prompt": "x", "top_p": 0}, "top_p"),
    (COMPL, {"prompt": "x", "top_k": -2}, "top_k"),
    (COMPL, {"prompt": "x", "top_k": 2**70}, "top_k"),
    (COMPL, {"prompt": "x", "logprobs": 50}, "logprobs"),
    (COMPL, {"prompt": "x", "stop": [""]}, "?"),
    (COMPL, {"prompt": "x", "min_tokens": 10, "max_tokens": 5}, "min_tokens"),
    (COMPL, {"prompt": "x", "max_tokens": MAX_MODEL_LEN}, "max_tokens"),
    (COMPL, {"prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
    (CHAT, {"messages": MSG, "prompt_logprobs": -1}, "prompt_logprobs"),
    (COMPL, {}, "prompt"),
    (COMPL, [1, 2], "?"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, "?"),
    (CHAT, {"messages": [{"content": "x"}]}, "?"),
    (CHAT, {"messages": MSG, "max_tokens": -5}, "max_tokens"),
    (CHAT, {"messages": MSG, "n": 10**9}, "n"),
    (CHAT, {"messages": MSG, "top_logprobs": 99, "logprobs": True}, "top_logprobs"),
    (CHAT, {"messages": MSG, "top_logprobs": 3}, "top_logprobs"),
    (CHAT, {"messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
    # An empty regex or grammar is named by its own field (it was named structured_outputs).
    (COMPL, {"prompt": "x", "guided_regex": ""}, "guided_regex"),
    (CHAT, {"messages": MSG, "guided_grammar": ""}, "guided_grammar"),
    (COMPL, {"prompt": "x", "structured_outputs": {"regex": ""}}, "structured_outputs"),
    (COMPL, {"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    # OpenAI's Responses API, as its chat: "only set this when you set stream: true". Taken
    # unstreamed, it was dropped where chat and completions refuse it.
    ("/v1/responses", {"input": "x", "stream_options": {"include_obfuscation": False}},
     "stream_options"),
    (CHAT, {"messages": MSG, "stream": True, "stream_options": {"include_obfuscation": True}},
     "stream_options.include_obfuscation"),
    (COMPL, {"prompt": "x", "logit_bias": {"10000000": 1}}, "logit_bias"),
    (COMPL, {"prompt": "x", "allowed_token_ids": [10000000]}, "allowed_token_ids"),
    (CHAT, {"messages": MSG, "logit_bias": {"10000000": 1}}, "logit_bias"),
    (CHAT, {"messages": MSG, "max_completion_tokens": MAX_MODEL_LEN}, "max_completion_tokens"),
    (CHAT, {"messages": MSG, "stream": "yes please"}, "stream"),
    (CHAT, {"messages": MSG, "continue_final_message": True, "add_generation_prompt": True}, "?"),
    ("/tokenize", {"messages": MSG, "continue_final_message": True, "add_generation_prompt": True},
     "?"),
    ("/tokenize", {"prompt": 3}, "?"),
    # vLLM's prompt embeddings: counted or answered from the text prompt alone, they were
    # dropped with a log line.
    ("/tokenize", {"prompt": "x", "prompt_embeds": "AAAA"}, "prompt_embeds"),
    # Taken, the count was of the whole prompt where the route would send its last tokens.
    ("/tokenize", {"messages": MSG, "truncate_prompt_tokens": 2}, "truncate_prompt_tokens"),
    ("/detokenize", {"tokens": [10**7]}, "tokens"),
    ("/detokenize", {"tokens": "abc"}, "tokens"),
]


@pytest.mark.parametrize("path,body,param", BAD_BODIES)
def test_invalid_fields_are_400(http, path, body, param):
    err = _assert_error(http.post(path, json=body), 400, param)
    assert err["type"] == "invalid_request_error"


def test_a_top_k_past_64_bits_is_refused_and_the_engine_runs_on(http):
    # It was taken, and raised inside the engine loop's step, which stopped the loop:
    # every request after it got 503 until a restart.
    body = {"prompt": "x", "max_tokens": 1, "top_k": 2**70}
    _assert_error(http.post(COMPL, json=body), 400, "top_k")
    assert http.get("/health").status_code == 200
    with pytest.raises(ValueError, match="top_k"):
        from sarathi import SamplingParams

        SamplingParams(top_k=2**70)
    ok = http.post(COMPL, json={"prompt": "x", "max_tokens": 1, "top_k": 2**31 - 1})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path,body,param", [
    (COMPL, {"prompt": [[1]] * 40_000}, "prompt"),
    (COMPL, {"prompt": [1] + ["a"] * 40_000}, "prompt"),
    (COMPL, {"prompt": "x", "stop": [1] * 40_000}, "stop"),
    (COMPL, {"prompt": "x", "allowed_token_ids": ["a"] * 40_000}, "allowed_token_ids.0"),
    (COMPL, {"prompt": "x", "logit_bias": {str(i): "a" for i in range(15_000)}}, "logit_bias"),
    (CHAT, {"messages": [{"role": "wizard"}] * 10_000}, "?"),
    ("/detokenize", {"tokens": ["a"] * 40_000}, "tokens.0"),
    ("/v1/responses", {"input": "x", "metadata": {str(i): 1 for i in range(15_000)}}, "metadata"),
])
def test_many_bad_items_make_one_short_error(http, path, body, param):
    # Bodies are validated on the event loop: an error per item, and a message listing
    # them (in quadratic time), held every other request back for seconds, or minutes.
    err = _assert_error(http.post(path, json=body), 400, param)
    assert len(err["message"]) < 600, err["message"][:600]
    assert "more problems" not in err["message"]


def test_prompt_longer_than_the_context_is_400(http):
    ids = list(range(5, 5 + MAX_MODEL_LEN))
    err = _assert_error(http.post(COMPL, json={"prompt": ids}), 400)
    assert "context" in err["message"]
    long_chat = [{"role": "user", "content": "word " * 2000}]
    _assert_error(http.post(CHAT, json={"messages": long_chat}), 400)


@pytest.mark.parametrize(
    "path,body,field,length",
    [
        (CHAT, {"messages": [{"role": "user", "content": "word " * 200}]}, "messages", None),
        ("/v1/responses", {"input": "word " * 200}, "input", None),
        (COMPL, {"prompt": list(range(5, 5 + MAX_MODEL_LEN))}, "prompt", MAX_MODEL_LEN),
        (COMPL, {"prompt": list(range(5, 5 + MAX_MODEL_LEN + 9))}, "prompt", MAX_MODEL_LEN + 9),
        (COMPL, {"prompt": "word " * 20_000}, "prompt", None),  # too many bytes to tokenize
    ],
)
def test_a_prompt_over_the_context_is_refused_in_openais_words(http, path, body, field, length):
    """Clients (LiteLLM, LangChain) also tell an overflow by OpenAI's "maximum context
    length" in the message; ours said "the prompt has N tokens; this model's context is ...".
    A prompt of the context's exact length is refused too (no room for a generated token)."""
    err = _assert_error(http.post(path, json=body), 400, field)
    msg = err["message"]
    assert msg.startswith(f"This model's maximum context length is {MAX_MODEL_LEN} tokens. ")
    assert msg.endswith(f"Please reduce the length of the {field}."), msg
    if "bytes" in msg:
        return
    assert f"However, your {field} resulted in " in msg, msg
    if length is not None:
        assert f"resulted in {length} tokens" in msg, msg
    assert ("leaves no room for the completion" in msg) == (length == MAX_MODEL_LEN), msg
    assert err["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "path,body",
    [
        (COMPL, {"prompt": list(range(5, 5 + MAX_MODEL_LEN))}),  # too many tokens
        (CHAT, {"messages": [{"role": "user", "content": "word " * 2000}]}),
        (COMPL, {"prompt": "x", "max_tokens": MAX_MODEL_LEN}),  # with its completion
        (CHAT, {"messages": MSG, "max_completion_tokens": MAX_MODEL_LEN}),
        (COMPL, {"prompt": "word " * 20_000}),  # too many bytes to tokenize at all
    ],
)
def test_context_overflow_has_openais_code(http, path, body):
    """Clients tell an overflow from other 400s by OpenAI's code (to trim the history and
    retry, say)."""
    err = _assert_error(http.post(path, json=body), 400)
    assert err["code"] == "context_length_exceeded", err


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"null", b"\xff\xfe", b'{"prompt": "x",}'])
def test_malformed_json_is_400(http, raw):
    resp = http.post(COMPL, content=raw, headers={"content-type": "application/json"})
    _assert_error(resp, 400)


@pytest.mark.parametrize("path", [COMPL, "/v1/chat/completions", "/tokenize", "/v1/responses"])
def test_malformed_json_says_why_and_where(http, path):
    raw = b'{"prompt": "x",\n "max_tokens": 2,\n}'
    resp = http.post(path, content=raw, headers={"content-type": "application/json"})
    err = _assert_error(resp, 400, None)
    assert err["message"].startswith("the request body is not valid JSON: Expecting property"), err
    assert "line 3, column 1" in err["message"], err


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(http, constant):
    """Python's parser takes them: a NaN temperature was refused as "less than or equal to
    2", a bound it did not break."""
    raw = b'{"prompt": "x", "temperature": ' + constant.encode() + b"}"
    resp = http.post(COMPL, content=raw, headers={"content-type": "application/json"})
    err = _assert_error(resp, 400, None)
    assert err["message"] == (
        f"the request body is not valid JSON: {constant} is not a JSON value (JSON numbers are "
        "finite)"
    ), err


def test_a_large_malformed_body_says_why_and_where(http):
    """Bodies over 64 KiB are parsed in a worker thread: the same message comes back."""
    raw = b'{"prompt": "' + b"x" * (100 * 1024) + b'" "max_tokens": 2}'
    resp = http.post(COMPL, content=raw, headers={"content-type": "application/json"})
    err = _assert_error(resp, 400, None)
    assert "Expecting ',' delimiter at line 1, column 102415" in err["message"], err


@pytest.mark.parametrize(
    "raw,where",
    [
        (b'{"prompt": "caf\xe9", "max_tokens": 2}', "byte 0xe9 at offset 15"),
        ("{\"prompt\": \"x\"}".encode("utf-16"), "byte 0xff at offset 0"),
    ],
)
def test_a_body_that_is_not_utf8_says_so(http, raw, where):
    """A Latin-1 byte was a 400 saying only "There was an error parsing the body"; UTF-16
    was taken, where JSON between systems is UTF-8."""
    for path in (COMPL, "/v1/chat/completions"):
        resp = http.post(path, content=raw, headers={"content-type": "application/json"})
        err = _assert_error(resp, 400, None)
        assert err["message"].startswith("the request body is not UTF-8 text"), err
        assert where in err["message"] and "JSON" in err["message"], err


def test_a_compressed_body_is_a_415_naming_its_encoding(http):
    """A gzip body was read as it is: a 400 about byte 0x8b, not UTF-8."""
    import gzip

    raw = gzip.compress(b'{"prompt": "x", "max_tokens": 2}')
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    err = _assert_error(http.post(COMPL, content=raw, headers=headers), 415, None)
    assert "Content-Encoding 'gzip'" in err["message"], err
    plain = {**headers, "content-encoding": "identity"}
    resp = http.post(COMPL, content=b'{"prompt": "x", "max_tokens": 2}', headers=plain)
    assert resp.status_code == 200, resp.text


def test_a_utf8_byte_order_mark_is_taken(http):
    raw = b'\xef\xbb\xbf{"prompt": "x", "max_tokens": 2}'
    resp = http.post(COMPL, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("raw,kind", [(b"null", "null"), (b"[1]", "an array"), (b'"x"', "a string")])
@pytest.mark.parametrize("path", [COMPL, "/tokenize", "/v1/responses"])
def test_a_body_that_is_not_an_object_says_so(http, path, raw, kind):
    """Pydantic's message said the input should be "a valid dictionary or object to extract
    fields from", naming nothing; /tokenize, which takes two forms, said it twice."""
    resp = http.post(path, content=raw, headers={"content-type": "application/json"})
    err = _assert_error(resp, 400, None)
    assert err["message"] == f"the request body must be a JSON object, not {kind}", err


def test_an_empty_body_says_so(http):
    """FastAPI's error for it was a bare "Field required" that named no field."""
    for path in (COMPL, "/v1/chat/completions", "/tokenize"):
        resp = http.post(path, content=b"", headers={"content-type": "application/json"})
        assert "body is empty" in _assert_error(resp, 400)["message"]


@pytest.mark.parametrize("media", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_without_the_json_content_type_says_so(http, media):
    headers = {"content-type": media} if media else {}
    raw = json.dumps({"prompt": "x", "max_tokens": 2}).encode()
    err = _assert_error(http.post(COMPL, content=raw, headers=headers), 400)
    assert "Content-Type: application/json" in err["message"], err


def test_lone_surrogates_are_not_a_server_error(http):
    raw = b'{"prompt": "a\\ud800b", "max_tokens": 2, "echo": true}'
    resp = http.post(COMPL, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code in (200, 400), resp.text


def test_a_body_s_strings_are_checked_once(monkeypatch):
    """The check for lone surrogates and nesting walks a route's whole body; the models
    inside it (messages, tools, their parts) walked their parts again, up to four times a
    string: 0.5 s on the event loop for a 3.5 MB body of tools, for every such request."""
    from sarathi.entrypoints.openai_server import protocol

    checked: list[str] = []
    is_unicode = protocol.is_unicode
    monkeypatch.setattr(protocol, "is_unicode", lambda s: checked.append(s) or is_unicode(s))
    schema = {"type": "object", "properties": {"p": {"type": "string"}}}
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
    }
    protocol.ChatCompletionRequest.model_validate(body)
    # Its 21 strings, keys and values: messages, role, user, content, type, text, text, hi,
    # tools, type, function, function, name, f, parameters, type, object, properties, p,
    # type, string.
    assert len(checked) == 21, checked


@pytest.mark.parametrize(
    "path, body",
    [
        (COMPL, {"prompt": "hi", "max_tokens": 1, "n": None}),  # a null: the model copies it
        (CHAT, {"messages": MSG, "max_tokens": 1}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 1}),
        ("/tokenize", {"prompt": "hi"}),
    ],
)
def test_a_body_is_walked_once_off_the_event_loop(server, http, monkeypatch, path, body):
    """The walk for lone surrogates and nesting covers a route's whole body: 0.6-0.9 s for
    4 MB of small strings or objects, which on the event loop held every other client (ten
    such bodies at once: 8 s). Here the walk of a body past the size parsed inline blocks
    until /health, asked meanwhile, has answered; and the body's model does not walk it
    again on the loop."""
    from sarathi.entrypoints.openai_server import protocol
    from sarathi.entrypoints.openai_server.routes import INLINE_BODY_BYTES

    body = {**body, "padding": "x" * INLINE_BODY_BYTES}  # an unknown field: taken

    walking, answered = threading.Event(), threading.Event()
    walkers: list[threading.Thread] = []
    check_json = protocol._check_json

    def blocking_check_json(data: object) -> None:
        walkers.append(threading.current_thread())
        walking.set()
        answered.wait(10)
        check_json(data)

    monkeypatch.setattr(protocol, "_check_json", blocking_check_json)
    r = health_answers_during(server, lambda: http.post(path, json=body), walking, answered)
    assert r.status_code == 200, r.text
    assert len(walkers) == 1 and walkers[0] is not server.thread, walkers


def _nested(depth: int) -> str:
    """A JSON schema ``depth`` arrays deep, as raw JSON text (json.dumps recurses)."""
    return '{"type": "array", "items": ' * depth + '{"type": "integer"}' + "}" * depth


@pytest.mark.parametrize("depth", [200, 600, 950])
@pytest.mark.parametrize(
    "path, body",
    [
        (CHAT, '{"messages": [{"role": "user", "content": "x"}], "guided_json": %s}'),
        (
            "/v1/responses",
            '{"input": "x", "text": {"format": {"type": "json_schema", "name": "s", "schema": %s}}}',
        ),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "x"}], "tool_choice": "none", '
            '"tools": [{"type": "function", "function": {"name": "f", "parameters": %s}}]}',
        ),
        (
            "/tokenize",
            '{"messages": [{"role": "user", "content": "x"}], '
            '"tools": [{"type": "function", "function": {"name": "f", "parameters": %s}}]}',
        ),
        (COMPL, '{"prompt": "x", "max_tokens": 1, "unknown_field": %s}'),
    ],
)
def test_deeply_nested_json_is_a_400(http, path, body, depth):
    """JSON nested hundreds deep (a body parses up to about 990 levels) exhausted Python's
    stack in what walked it recursively: deepcopy of a schema, the chat template, the
    request check itself."""
    raw = (body % _nested(depth)).encode()
    resp = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert "levels deep" in _assert_error(resp, 400)["message"]


@pytest.mark.parametrize("depth", [600, 2000])
def test_a_deeply_nested_schema_sent_as_a_string_is_a_400(http, depth):
    """A schema in a string is parsed by the grammar compiler, past the request's check of
    nesting: hundreds of levels exhausted the stack there (parsing it, or copying it)."""
    body = {"messages": MSG, "max_tokens": 1, "guided_json": _nested(depth)}
    _assert_error(http.post(CHAT, json=body), 400, "guided_json")


def test_unknown_model_is_404(http, client):
    import openai

    err = _assert_error(http.post(COMPL, json={"model": "gpt-9", "prompt": "x"}), 404, "model")
    assert err["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSG)


def test_unknown_route_and_method_are_openai_shaped(http):
    _assert_error(http.get("/v1/nothing"), 404)
    resp = http.get(COMPL)
    err = _assert_error(resp, 405)
    # HTTP requires a 405 to say which methods the route takes.
    assert resp.headers["allow"] == "POST" and "takes POST" in err["message"]


@pytest.mark.parametrize("path", ["/health", "/ping", "/v1/models", "/v1/models/demo", "/version"])
def test_head_answers_as_get_without_a_body(http, path):
    """Load balancers and health checkers probe with HEAD; FastAPI gave it a 405."""
    get, head = http.get(path), http.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length"):
        assert head.headers[name] == get.headers[name], name


def test_head_on_metrics_and_an_unknown_model(http):
    head = http.head("/metrics")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == http.get("/metrics").headers["content-type"]
    assert http.head("/v1/models/nope").status_code == 404


def test_head_keeps_unknown_paths_and_post_routes_apart(http):
    assert http.head("/v1/nothing").status_code == 404
    resp = http.head(COMPL)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"


def test_a_405_names_every_method_of_the_path(http):
    """Starlette's Allow named the first route's methods only: GET without its HEAD twin."""
    resp = http.post("/v1/models")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD"
    assert "takes GET, HEAD" in resp.json()["error"]["message"]
    resp = http.put("/v1/responses/resp_x")
    assert resp.status_code == 405 and resp.headers["allow"] == "DELETE, GET, HEAD"


def test_head_routes_are_not_operations_of_the_openapi_document(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert "/health" in paths and "get" in paths["/health"]
    assert not [p for p, ops in paths.items() if "head" in ops]


def test_oversized_bodies_are_413(http, server):
    big = {"prompt": "x" * (300 * 1024)}
    err = _assert_error(http.post(COMPL, json=big), 413)
    assert err["code"] == "request_too_large"

    def chunks():  # no Content-Length: the body is counted as it streams in
        for _ in range(300):
            yield b"x" * 1024

    _assert_error(
        http.post(COMPL, content=chunks(), headers={"content-type": "application/json"}), 413
    )
    assert http.get("/health").status_code == 200


def test_api_key(key_server):
    import openai

    with httpx.Client(base_url=key_server.url, timeout=30) as h:
        err = _assert_error(h.post(COMPL, json={"prompt": "x"}), 401)
        assert err["code"] == "invalid_api_key"
        _assert_error(h.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        _assert_error(h.post("/tokenize", json={"prompt": "x"}), 401)
        _assert_error(h.post("/reset_prefix_cache"), 401)
        _assert_error(h.get("/tokenizer_info"), 401)
        for open_path in ("/health", "/metrics", "/load", "/version"):
            assert h.get(open_path).status_code == 200
    with openai.OpenAI(base_url=key_server.base_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
    with openai.OpenAI(base_url=key_server.base_url, api_key=API_KEY, max_retries=0) as c:
        assert [m.id for m in c.models.list().data] == ["my-model"]
        out = c.completions.create(model="my-model", prompt="hi", max_tokens=2)
        assert out.model == "my-model" and out.usage.completion_tokens >= 1


def test_a_non_ascii_api_key_matches_as_its_utf8_bytes():
    # Clients send the key as UTF-8; the header was decoded as latin-1 and encoded again as
    # UTF-8 before the comparison, so such a key was refused however it was sent.
    from sarathi.entrypoints.openai_server.auth import key_matches

    assert key_matches("Bearer clé-k".encode(), "clé-k")
    assert key_matches("bearer  clé-k ".encode(), "clé-k")
    assert not key_matches("Bearer clé-k".encode("latin-1"), "clé-k")
    assert not key_matches(b"Basic k", "k") and not key_matches(None, "k")


def test_engine_loop_failure_gives_503_and_errors_streams():
    def break_step(engine):
        def step():
            raise RuntimeError("simulated device failure")

        engine.step = step

    live = start_server(engine_hook=break_step)
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            assert h.get("/health").status_code == 200
            lines = []
            with h.stream("POST", COMPL, json={"prompt": "x", "stream": True}) as resp:
                assert resp.status_code == 200
                lines = [line for line in resp.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            event = json.loads(lines[-2][len("data: ") :])
            assert "simulated device failure" in event["error"]["message"]
            _assert_error(h.get("/health"), 503)
            _assert_error(h.post(COMPL, json={"prompt": "x"}), 503)
    finally:
        stop_server(live)


def test_models_do_not_show_the_servers_filesystem(http, server):
    card = http.get("/v1/models").json()["data"][0]
    assert card["root"] == card["id"]
    assert "/" not in card["root"] or card["root"] == server.app.state.sarathi.model_name


def test_request_success_counts_requests_once(http):
    def successes() -> float:
        text = http.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("sarathi:request_success_total{"))

    before = successes()
    r = http.post("/v1/completions", json={"prompt": "x", "n": 3, "max_tokens": 2})
    assert r.status_code == 200
    assert successes() - before == 1


@pytest.mark.parametrize("path", [COMPL, CHAT])
@pytest.mark.parametrize("keys", [["bad1", "bad2"], ["-1"], ["5_0"], ["+7"]])
def test_logit_bias_keys_that_are_not_token_ids_are_named(http, path, keys):
    # "-1" reached the sampling params, whose message blamed a value in [-100, 100]
    # ("must map token ids to numbers in [-100, 100], got {-1: 1.0}"); "5_0" and "+7"
    # were read by int() as tokens 50 and 7. The keys at fault are named, as vLLM names them.
    body = {"prompt": "x"} if path == COMPL else {"messages": MSG}
    body.update({"max_tokens": 1, "logit_bias": {k: 1 for k in keys}})
    err = _assert_error(http.post(path, json=body), 400, "logit_bias")
    assert all(repr(k) in err["message"] for k in keys), err["message"]
    assert "token id" in err["message"]
