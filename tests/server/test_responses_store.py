"""Stored responses of the Responses API: ``store``, ``previous_response_id``,
``client.responses.retrieve`` / ``delete`` / ``input_items.list`` through the real ``openai``
SDK on the demo model, the errors as raw HTTP, and the store's bounds (unit tests of
``ResponseStore``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from live_server import API_KEY, LiveServer, start_server, stop_server
from sarathi.entrypoints.openai_server.response_store import ResponseStore, StoredResponse
from test_responses import ADD, WEATHER, _events, check_call


@pytest.fixture(scope="module")
def small_store() -> Iterator[LiveServer]:
    """A server whose store keeps two responses."""
    live = start_server(responses_store_max_entries=2)
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def no_store() -> Iterator[LiveServer]:
    live = start_server(responses_store_max_mb=0)
    yield live
    stop_server(live)


def _client(live: LiveServer, key: str = "unused") -> Any:
    import openai

    return openai.OpenAI(base_url=live.base_url, api_key=key, max_retries=0, timeout=60)


def _not_found(call: Any) -> dict[str, Any]:
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        call()
    err = e.value.body
    assert e.value.status_code == 404 and err["type"] == "invalid_request_error", err
    return err


# -- the store ----------------------------------------------------------------------------
def _entry(size: int) -> StoredResponse:
    return StoredResponse(b"r" * (size // 2), b"i" * (size - size // 2))


def test_the_store_evicts_the_least_recently_used_past_its_count():
    store = ResponseStore(max_entries=3, max_bytes=1 << 20)
    for name in "abc":
        assert store.put(name, _entry(10))
    assert store.get("a") is not None  # a is now the most recently used
    store.put("d", _entry(10))
    assert store.get("b") is None and len(store) == 3
    assert all(store.get(n) is not None for n in "acd")
    assert store.evictions == 1 and store.bytes_used == 30


def test_the_store_evicts_past_its_bytes_and_refuses_what_cannot_fit():
    store = ResponseStore(max_entries=100, max_bytes=100)
    store.put("a", _entry(40))
    store.put("b", _entry(40))
    store.put("c", _entry(40))  # 120 bytes: a goes
    assert store.get("a") is None and store.bytes_used == 80
    store.put("d", _entry(100))  # takes the whole store
    assert len(store) == 1 and store.bytes_used == 100
    assert not store.put("e", _entry(101)) and store.get("e") is None
    assert store.get("d") is not None  # a refused entry evicts nothing


def test_the_store_replaces_and_deletes_by_id():
    store = ResponseStore(max_entries=5, max_bytes=1000)
    store.put("a", _entry(10))
    store.put("a", _entry(30))
    assert len(store) == 1 and store.bytes_used == 30
    assert store.delete("a") and not store.delete("a")
    assert store.bytes_used == 0 and store.get("a") is None


@pytest.mark.parametrize("entries,mb", [(0, 1), (1, 0)])
def test_a_zero_bound_disables_the_store(entries, mb):
    store = ResponseStore(entries, mb)
    assert not store.enabled and not store.put("a", _entry(1)) and len(store) == 0


def test_the_store_keeps_its_bounds_under_threads():
    store = ResponseStore(max_entries=50, max_bytes=2000)
    start = threading.Barrier(8)

    def work(t: int) -> None:
        start.wait()
        for i in range(500):
            store.put(f"{t}-{i}", _entry(10 + i % 40))
            store.get(f"{t}-{i - 3}")
            if i % 7 == 0:
                store.delete(f"{t}-{i - 1}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store) <= 50 and store.bytes_used <= 2000
    held = [store.get(k) for k in list(store._entries)]
    assert store.bytes_used == sum(e.size for e in held if e is not None)


# -- store, retrieve, delete --------------------------------------------------------------
def test_a_response_is_stored_retrieved_and_deleted(client, http):
    posted = http.post("/v1/responses", json={"input": "Hello", "max_output_tokens": 4}).json()
    assert posted["store"] is True
    assert http.get(f"/v1/responses/{posted['id']}").json() == posted
    r = client.responses.retrieve(posted["id"])
    assert r.output_text == posted["output"][0]["content"][0]["text"]
    gone = http.delete(f"/v1/responses/{r.id}")
    assert gone.status_code == 200 and gone.json() == {
        "id": r.id,
        "object": "response",
        "deleted": True,
    }
    err = _not_found(lambda: client.responses.retrieve(r.id))
    assert r.id in err["message"]
    _not_found(lambda: client.responses.delete(r.id))
    _not_found(lambda: client.responses.input_items.list(r.id))


def test_the_callers_request_id_is_the_responses_id(client, http):
    # vLLM's: the body's request_id names the response (the header is not used here).
    own = "my-run_1.2:3~x"
    r = client.responses.create(
        model="demo", input="Hello", max_output_tokens=2, extra_body={"request_id": own}
    )
    assert r.id == own and client.responses.retrieve(own).id == own
    again = http.post("/v1/responses", json={"input": "Hi", "request_id": own})
    assert again.status_code == 400, again.text
    err = again.json()["error"]
    assert err["param"] == "request_id" and "stored response" in err["message"]
    assert client.responses.retrieve(own).model_dump() == r.model_dump()  # not replaced
    client.responses.delete(own)
    streamed = _events(
        client.responses.create(
            model="demo", input="Hi", max_output_tokens=2, stream=True,
            extra_body={"request_id": own},
        )
    )  # fmt: skip
    assert {e.response.id for e in streamed if hasattr(e, "response")} == {own}
    client.responses.delete(own)
    for bad in ("a/b", "a b", "caf\u00e9", "x?y"):
        resp = http.post("/v1/responses", json={"input": "Hi", "request_id": bad})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "request_id", bad


def test_store_false_is_not_stored(client):
    r = client.responses.create(model="demo", input="Hello", max_output_tokens=2, store=False)
    assert r.store is False
    _not_found(lambda: client.responses.retrieve(r.id))


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_a_streamed_response_is_stored_as_it_ended(client, ignore_eos):
    events = _events(
        client.responses.create(
            model="demo", input="Tell me", max_output_tokens=5, stream=True,
            extra_body={"ignore_eos": ignore_eos},
        )
    )  # fmt: skip
    final = events[-1].response
    assert events[0].response.store is True and final.store is True
    if ignore_eos:
        assert final.status == "incomplete"
    got = client.responses.retrieve(final.id)
    assert got.model_dump() == final.model_dump()


def test_a_failed_stream_is_stored_failed(server, client):
    """An engine failure mid-stream: the response.failed event's response is stored."""
    engine = server.engine
    real = engine.generate

    def failing(*args: Any, **kwargs: Any) -> Any:
        async def outputs() -> Any:
            raise RuntimeError("boom")
            yield

        return outputs()

    engine.generate = failing
    try:
        events = _events(
            client.responses.create(model="demo", input="x", max_output_tokens=2, stream=True)
        )
    finally:
        engine.generate = real
    assert events[-1].type == "response.failed"
    got = client.responses.retrieve(events[-1].response.id)
    assert got.status == "failed" and got.error is not None


def test_unknown_ids_are_openais_404(http):
    for method, path in [
        ("GET", "/v1/responses/resp_nope"),
        ("DELETE", "/v1/responses/resp_nope"),
        ("GET", "/v1/responses/resp_nope/input_items"),
    ]:
        r = http.request(method, path)
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and "'resp_nope' not found" in err["message"]
    r = http.post("/v1/responses", json={"input": "hi", "previous_response_id": "resp_nope"})
    assert r.status_code == 404, r.text
    assert r.json()["error"] == {
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }


def test_get_with_stream_is_refused(client, http):
    r = client.responses.create(model="demo", input="Hello", max_output_tokens=2)
    got = http.get(f"/v1/responses/{r.id}", params={"stream": "true"})
    assert got.status_code == 400 and got.json()["error"]["param"] == "stream"


# -- previous_response_id -----------------------------------------------------------------
def test_a_conversation_continues_from_its_previous_response(client):
    first = client.responses.create(model="demo", input="Hello", max_output_tokens=4)
    second = client.responses.create(
        model="demo", input="And then?", previous_response_id=first.id, max_output_tokens=4
    )
    assert second.previous_response_id == first.id
    by_hand = client.responses.create(
        model="demo",
        input=[
            {"role": "user", "content": "Hello"},
            *[item.model_dump() for item in first.output],
            {"role": "user", "content": "And then?"},
        ],
        max_output_tokens=4,
        store=False,
    )
    assert second.usage.input_tokens == by_hand.usage.input_tokens
    # The third turn needs only the second's entry: the first may be gone.
    client.responses.delete(first.id)
    third = client.responses.create(
        model="demo", input="More", previous_response_id=second.id, max_output_tokens=2
    )
    items = client.responses.input_items.list(third.id, order="asc", limit=100).data
    texts = [item.content[0].text for item in items]
    assert texts == ["Hello", first.output_text, "And then?", second.output_text, "More"]
    assert [item.role for item in items] == ["user", "assistant", "user", "assistant", "user"]


def test_instructions_are_not_carried_over(client):
    long = "Answer in the style of a very long and detailed pirate story. " * 3
    first = client.responses.create(
        model="demo", input="Hello", instructions=long, max_output_tokens=3
    )
    history = [
        {"role": "user", "content": "Hello"},
        *[item.model_dump() for item in first.output],
        {"role": "user", "content": "Why?"},
    ]
    for instructions in (None, "Be brief."):
        kwargs = {} if instructions is None else {"instructions": instructions}
        chained = client.responses.create(
            model="demo", input="Why?", previous_response_id=first.id, max_output_tokens=2,
            **kwargs,
        )  # fmt: skip
        by_hand = client.responses.create(
            model="demo", input=history, max_output_tokens=2, store=False, **kwargs
        )
        assert chained.instructions == instructions
        assert chained.usage.input_tokens == by_hand.usage.input_tokens


def test_a_tool_round_trip_by_previous_response_id(tools_client):
    first = tools_client.responses.create(
        model="demo", input="Weather in Rome?", tools=[WEATHER], tool_choice="required",
        parallel_tool_calls=False, max_output_tokens=150,
    )  # fmt: skip
    (call,) = first.output
    check_call(call.name, call.arguments)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"}
    second = tools_client.responses.create(
        model="demo", input=[result], previous_response_id=first.id, tools=[WEATHER, ADD],
        tool_choice="none", max_output_tokens=3,
    )  # fmt: skip
    by_hand = tools_client.responses.create(
        model="demo", input=[{"role": "user", "content": "Weather in Rome?"}, call, result],
        tools=[WEATHER, ADD], tool_choice="none", max_output_tokens=3, store=False,
    )  # fmt: skip
    assert second.usage.input_tokens == by_hand.usage.input_tokens
    items = tools_client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    assert items[1].id == call.id and items[1].call_id == call.call_id
    assert items[2].call_id == call.call_id and items[2].output == "21 C"


def test_an_evicted_response_cannot_be_continued(small_store):
    with _client(small_store) as c:
        first = c.responses.create(model="demo", input="a", max_output_tokens=2)
        for text in ("b", "c"):
            c.responses.create(model="demo", input=text, max_output_tokens=2)
        err = _not_found(
            lambda: c.responses.create(
                model="demo", input="d", previous_response_id=first.id, max_output_tokens=2
            )
        )
    assert err["code"] == "previous_response_not_found" and first.id in err["message"]


# -- input items --------------------------------------------------------------------------
def test_input_items_are_listed_as_openai_lists_them(client, http):
    sent = [
        {"role": "developer", "content": "Be kind."},
        {"type": "message", "role": "user", "content": "one", "id": "msg_mine"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "two"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
    ]
    r = client.responses.create(model="demo", input=sent, max_output_tokens=2)
    page = client.responses.input_items.list(r.id)  # newest first, as OpenAI's default
    assert [i.content[0].text for i in page.data] == ["three", "two", "one", "Be kind."]
    assert page.data[2].id == "msg_mine"  # an id sent with an item is kept
    assert len({i.id for i in page.data}) == 4 and all(i.id for i in page.data)
    assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
    assert page.has_more is False
    first = http.get(f"/v1/responses/{r.id}/input_items", params={"limit": 2, "order": "asc"})
    body = first.json()
    assert body["object"] == "list" and body["has_more"] is True
    assert [i["content"][0]["text"] for i in body["data"]] == ["Be kind.", "one"]
    rest = http.get(
        f"/v1/responses/{r.id}/input_items",
        params={"limit": 2, "order": "asc", "after": body["last_id"]},
    ).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["two", "three"]
    assert rest["has_more"] is False
    # The SDK's pager follows has_more with after.
    texts = [i.content[0].text for i in client.responses.input_items.list(r.id, limit=1)]
    assert texts == ["three", "two", "one", "Be kind."]


@pytest.mark.parametrize(
    "params,param",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "newest"}, "order"),
        ({"after": "msg_unknown"}, "after"),
    ],
)
def test_bad_input_item_queries_are_400(client, http, params, param):
    r = client.responses.create(model="demo", input="hi", max_output_tokens=2)
    got = http.get(f"/v1/responses/{r.id}/input_items", params=params)
    assert got.status_code == 400, got.text
    assert got.json()["error"]["param"] == param


# -- without a store ----------------------------------------------------------------------
def test_without_a_store_nothing_is_stored_and_asking_is_a_400(no_store):
    import httpx

    with _client(no_store) as c:
        r = c.responses.create(model="demo", input="hi", max_output_tokens=2)
        assert r.store is False
        _not_found(lambda: c.responses.retrieve(r.id))
    with httpx.Client(base_url=no_store.url, timeout=60) as http:
        for field, value in (("store", True), ("previous_response_id", r.id)):
            got = http.post("/v1/responses", json={"input": "hi", field: value})
            assert got.status_code == 400, got.text
            err = got.json()["error"]
            assert err["param"] == field and "--responses-store-max-entries" in err["message"]
        body = {"input": "hi", "max_output_tokens": 2, "store": False}
        got = http.post("/v1/responses", json=body)
        assert got.status_code == 200 and got.json()["store"] is False


# -- auth and /ping -----------------------------------------------------------------------
def test_the_api_key_guards_the_stored_response_routes(key_server):
    import httpx

    with _client(key_server, API_KEY) as c:
        r = c.responses.create(model="my-model", input="hi", max_output_tokens=2)
        assert c.responses.retrieve(r.id).id == r.id
        assert c.responses.input_items.list(r.id).data
    with httpx.Client(base_url=key_server.url, timeout=60) as http:
        for method, path in [
            ("GET", f"/v1/responses/{r.id}"),
            ("GET", f"/v1/responses/{r.id}/input_items"),
            ("DELETE", f"/v1/responses/{r.id}"),
        ]:
            assert http.request(method, path).status_code == 401
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert http.delete(f"/v1/responses/{r.id}", headers=auth).status_code == 200
        # /ping answers as /health does: open to probes, which carry no key.
        assert http.get("/ping").json() == {"status": "ok"}
        assert http.post("/ping").json() == {"status": "ok"}


# -- background ---------------------------------------------------------------------------
def _poll(c: Any, response_id: str) -> Any:
    """The response once it has ended (each poll is a GET: no sleeping between them would
    be shorter than the engine's steps, and the loop is bounded)."""
    for _ in range(10_000):
        r = c.responses.retrieve(response_id)
        if r.status not in ("queued", "in_progress"):
            return r
    raise AssertionError(f"{response_id} did not finish")


def test_a_background_response_runs_and_is_polled(client):
    r = client.responses.create(
        model="demo", input="Hello", max_output_tokens=4, background=True
    )
    assert r.status == "queued" and r.background is True and r.store is True and not r.output
    done = _poll(client, r.id)
    assert done.status in ("completed", "incomplete") and done.output and done.background
    assert 0 < done.usage.output_tokens <= 4
    # A cancel after it ended is an error (OpenAI's); the response is unchanged.
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.responses.cancel(r.id)
    assert "status" in e.value.body["message"]
    assert client.responses.retrieve(r.id).status == done.status


def test_a_background_response_is_cancelled_and_its_request_aborted(server, client):
    """The engine's stream of the response is held after its first output until the cancel
    comes, so the cancel finds it running; the cancel closes that stream, whose closing
    aborts the engine request (AsyncEngine.generate)."""
    engine = server.engine
    real = engine.generate
    closed = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        async def outputs() -> Any:
            try:
                async with contextlib.aclosing(real(*args, **kwargs)) as stream:
                    async for out in stream:
                        yield out
                        await asyncio.Event().wait()  # until cancelled
            finally:
                closed.set()

        return outputs()

    engine.generate = held
    try:
        r = client.responses.create(
            model="demo", input="Tell me", max_output_tokens=50, background=True
        )
        cancelled = client.responses.cancel(r.id)
    finally:
        engine.generate = real
    assert cancelled.status == "cancelled" and cancelled.id == r.id and closed.is_set()
    assert client.responses.retrieve(r.id).status == "cancelled"
    assert client.responses.cancel(r.id).status == "cancelled"  # again: returned as it is
    assert len(server.app.state.sarathi.background) == 0


def test_background_needs_the_store(client, http, no_store):
    import httpx

    got = http.post("/v1/responses", json={"input": "hi", "background": True, "store": False})
    assert got.status_code == 400 and got.json()["error"]["param"] == "store"
    got = http.post("/v1/responses", json={"input": "hi", "background": True, "stream": True})
    assert got.status_code == 400 and got.json()["error"]["param"] == "stream"
    with httpx.Client(base_url=no_store.url, timeout=60) as other:
        got = other.post("/v1/responses", json={"input": "hi", "background": True})
    assert got.status_code == 400, got.text
    err = got.json()["error"]
    assert err["param"] == "background" and "--responses-store-max-mb" in err["message"]


def test_only_background_responses_are_cancelled(client, http):
    r = client.responses.create(model="demo", input="hi", max_output_tokens=2)
    got = http.post(f"/v1/responses/{r.id}/cancel")
    assert got.status_code == 400 and "background" in got.json()["error"]["message"]
    assert http.post("/v1/responses/resp_nope/cancel").status_code == 404


def test_a_delete_while_the_result_is_being_stored_leaves_nothing_stored(server, client, http):
    """A DELETE that comes while a background response's end is being written to the store
    (a worker thread) waits for that write: the response is deleted for good, not stored
    again by the write that was under way."""
    store = server.app.state.sarathi.responses
    real_put = store.put
    storing, stored_now, release = threading.Event(), threading.Event(), threading.Event()

    def slow_put(response_id: str, entry: StoredResponse) -> bool:
        if b'"status":"queued"' in entry.response_json:
            return real_put(response_id, entry)
        storing.set()
        release.wait(10)
        try:
            return real_put(response_id, entry)
        finally:
            stored_now.set()

    store.put = slow_put
    try:
        r = client.responses.create(
            model="demo", input="Hello", max_output_tokens=2, background=True
        )
        assert storing.wait(30)
        timer = threading.Timer(0.5, release.set)  # the DELETE is waiting by then
        timer.start()
        got = http.delete(f"/v1/responses/{r.id}")
        assert stored_now.wait(30)
        timer.join()
    finally:
        store.put = real_put
    assert got.status_code == 200, got.text
    assert http.get(f"/v1/responses/{r.id}").status_code == 404
