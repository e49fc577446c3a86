"""What the client tests share: the served model's name, the API key, the question and the
tool they ask with, and the marks of the optional clients (a module of its own: importing
``conftest`` by name picks whichever conftest pytest loaded last). The chat template is the
server suite's (``server.live_server.HERMES_TEMPLATE``)."""

from __future__ import annotations

import os

import pytest

MODEL = "demo"
API_KEY = "clients-key"

ASK = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo", "Rome"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
        },
    },
}

# LiteLLM, instructor and LlamaIndex: ``pip install -e ".[clients]"``, then
# ``SARATHI_OPTIONAL_CLIENTS=1 python -m pytest tests/clients -m clients_optional``.
OPTIONAL_ENV = "SARATHI_OPTIONAL_CLIENTS"
RUN_OPTIONAL = os.environ.get(OPTIONAL_ENV) == "1"
OPTIONAL = [
    pytest.mark.clients_optional,
    pytest.mark.skipif(
        not RUN_OPTIONAL,
        reason=f'optional client: pip install -e ".[clients]" and set {OPTIONAL_ENV}=1',
    ),
]
