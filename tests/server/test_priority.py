"""The request field ``priority`` (vLLM's): a 400 naming the flag under the default fcfs
policy, taken on every generation route under ``--scheduling-policy priority``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from live_server import LiveServer, start_server, stop_server

MESSAGES = [{"role": "user", "content": "hi"}]
BODIES = {
    "/v1/completions": {"prompt": "hi", "max_tokens": 4},
    "/v1/chat/completions": {"messages": MESSAGES, "max_tokens": 4},
    "/v1/responses": {"input": "hi", "max_output_tokens": 4},
}


@pytest.fixture(scope="module")
def priority_server() -> Iterator[LiveServer]:
    live = start_server({"scheduling_policy": "priority"})
    yield live
    stop_server(live)


@pytest.fixture
def priority_http(priority_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=priority_server.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route", sorted(BODIES))
def test_a_priority_under_fcfs_is_a_400_naming_the_flag(http, route, stream):
    r = http.post(route, json={**BODIES[route], "priority": 3, "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "priority"
    assert "got priority 3" in err["message"]
    assert "--scheduling-policy priority" in err["message"]


@pytest.mark.parametrize("route", sorted(BODIES))
def test_priority_zero_is_taken_under_fcfs(http, route):
    assert http.post(route, json={**BODIES[route], "priority": 0}).status_code == 200


@pytest.mark.parametrize("route", sorted(BODIES))
@pytest.mark.parametrize("priority", [-5, 0, 7, 2**63 - 1])
def test_every_route_takes_a_priority_under_the_priority_policy(priority_http, route, priority):
    r = priority_http.post(route, json={**BODIES[route], "priority": priority})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["high", 1.5, True, 2**63])
def test_a_priority_must_be_a_64_bit_integer(priority_http, value):
    r = priority_http.post("/v1/completions", json={**BODIES["/v1/completions"], "priority": value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "priority"


def _greedy(h: httpx.Client, route: str, priority: int) -> Any:
    body = {**BODIES[route], "temperature": 0, "max_tokens": 8, "ignore_eos": True}
    r = h.post(route, json={**body, "priority": priority})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_the_priority_changes_the_order_not_the_output(priority_http, route):
    want = _greedy(priority_http, route, 0)
    assert _greedy(priority_http, route, -3) == want
    assert _greedy(priority_http, route, 9) == want


def test_the_openai_client_sends_it_as_an_extra(priority_server):
    import openai

    with openai.OpenAI(
        base_url=priority_server.base_url, api_key="unused", max_retries=0, timeout=60
    ) as c:
        r = c.completions.create(
            model="demo", prompt="hi", max_tokens=2, extra_body={"priority": -1}
        )
        assert r.choices[0].finish_reason == "length"
