"""LiteLLM against the server (optional: ``SARATHI_OPTIONAL_CLIENTS=1``): the
``hosted_vllm/`` and ``openai/`` providers, streaming, tools, a Pydantic
``response_format``, text completion, async."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from clients_common import API_KEY, ASK, MODEL, OPTIONAL, WEATHER_TOOL
from pydantic import BaseModel, Field

pytestmark = OPTIONAL


class City(BaseModel):
    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    country: Literal["France", "Norway", "Italy"]


def _kwargs(base_url: str) -> dict[str, Any]:
    return {"api_base": base_url, "api_key": API_KEY, "num_retries": 0, "timeout": 60}


@pytest.mark.parametrize("provider", ["hosted_vllm", "openai"])
def test_completion(base_url: str, provider: str) -> None:
    import litellm

    r = litellm.completion(
        model=f"{provider}/{MODEL}", messages=ASK, max_tokens=8, temperature=0, **_kwargs(base_url)
    )
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8


def test_streaming(base_url: str) -> None:
    import litellm

    kwargs = {"model": f"hosted_vllm/{MODEL}", "messages": ASK, "max_tokens": 8, "temperature": 0}
    full = litellm.completion(**kwargs, **_kwargs(base_url))
    chunks = list(litellm.completion(stream=True, **kwargs, **_kwargs(base_url)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content


def test_tools(base_url: str) -> None:
    import litellm

    r = litellm.completion(
        model=f"hosted_vllm/{MODEL}",
        messages=ASK,
        max_tokens=60,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        **_kwargs(base_url),
    )
    (call,) = r.choices[0].message.tool_calls
    args = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and args["city"] in ("Paris", "Oslo", "Rome")


def test_pydantic_response_format(base_url: str) -> None:
    import litellm

    r = litellm.completion(
        model=f"hosted_vllm/{MODEL}",
        messages=ASK,
        max_tokens=100,
        response_format=City,
        **_kwargs(base_url),
    )
    City.model_validate_json(r.choices[0].message.content)


def test_text_completion(base_url: str) -> None:
    import litellm

    r = litellm.text_completion(
        model=f"hosted_vllm/{MODEL}",
        prompt="Hello, my name is",
        max_tokens=6,
        temperature=0,
        **_kwargs(base_url),
    )
    assert isinstance(r.choices[0].text, str)


def test_async(base_url: str) -> None:
    import asyncio

    import litellm

    async def run() -> Any:
        return await litellm.acompletion(
            model=f"hosted_vllm/{MODEL}", messages=ASK, max_tokens=4, **_kwargs(base_url)
        )

    assert isinstance(asyncio.run(run()).choices[0].message.content, str)
