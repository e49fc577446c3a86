"""Fixtures of the server tests; the helpers live in live_server.py."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from live_server import API_KEY, HERMES_TEMPLATE, LiveServer, start_server, stop_server


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    """The shared server: demo model, no API key, 256 KiB body limit."""
    live = start_server(max_request_bytes=256 * 1024)
    yield live
    stop_server(live)


@pytest.fixture(scope="session")
def key_server() -> Iterator[LiveServer]:
    live = start_server(api_key=API_KEY, served_model_name="my-model")
    yield live
    stop_server(live)


@pytest.fixture(scope="session")
def tool_server(tmp_path_factory) -> Iterator[LiveServer]:
    """A server whose chat template renders tools (HERMES_TEMPLATE), so tool calls in auto
    mode are parsed from the model's own format; a longer context for the tools' text."""
    path = tmp_path_factory.mktemp("template") / "hermes.jinja"
    path.write_text(HERMES_TEMPLATE)
    live = start_server({"max_model_len": 1024}, chat_template=str(path))
    yield live
    stop_server(live)


@pytest.fixture
def tools_client(tool_server: LiveServer) -> Any:
    import openai

    with openai.OpenAI(
        base_url=tool_server.base_url, api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


@pytest.fixture
def client(server: LiveServer) -> Any:
    import openai

    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
def http(server: LiveServer) -> Any:
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
