"""The client suite: real client packages against a live server (demo model).

One server for the whole folder, started with a Hermes-style chat template (tools rendered,
assistant tool calls and tool results carried) and ``--tool-call-parser hermes``, as a Qwen
model is served, so ``tool_choice: "auto"`` is available. The demo model's weights are random:
tests assert on structure and types (what the grammar enforces), never on what the text says.

LiteLLM, instructor and LlamaIndex run only with ``SARATHI_OPTIONAL_CLIENTS=1`` (their
packages come with the ``clients`` extra; see ``clients_common.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from clients_common import API_KEY
from server.live_server import HERMES_TEMPLATE, LiveServer, start_server, stop_server

# LiteLLM fetches its model price list from GitHub on import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def clients_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The server every client test talks to (an API key, as real deployments have)."""
    path = tmp_path_factory.mktemp("clients-template") / "hermes.jinja"
    path.write_text(HERMES_TEMPLATE)
    live = start_server(
        {"max_model_len": 2048},
        api_key=API_KEY,
        chat_template=str(path),
        tool_call_parser="hermes",
        enable_auto_tool_choice=True,
    )
    yield live
    stop_server(live)


@pytest.fixture(scope="session")
def base_url(clients_server: LiveServer) -> str:
    """The OpenAI base URL (``.../v1``)."""
    return clients_server.base_url


@pytest.fixture(scope="session")
def server_url(clients_server: LiveServer) -> str:
    """The server's root URL (``/tokenize``, ``/tokenizer_info`` live here)."""
    return clients_server.url


@pytest.fixture
def openai_client(base_url: str) -> Iterator[Any]:
    import openai

    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real provider: clients that read OpenAI's environment get ours."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_ORG_ID"):
        monkeypatch.delenv(name, raising=False)
