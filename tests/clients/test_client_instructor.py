"""instructor against the server (optional: ``SARATHI_OPTIONAL_CLIENTS=1``): a Pydantic
``response_model`` through tools, strict tools and a JSON schema, streamed partials, and a
list of objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from clients_common import API_KEY, MODEL, OPTIONAL
from pydantic import BaseModel, Field

pytestmark = OPTIONAL

ASK = [{"role": "user", "content": "A city, please"}]


class City(BaseModel):
    """A city and its country."""

    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    country: Literal["France", "Norway", "Italy"]


@pytest.fixture
def openai_sdk(base_url: str) -> Iterator[Any]:
    import openai

    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


@pytest.mark.parametrize("mode", ["TOOLS", "TOOLS_STRICT", "JSON_SCHEMA"])
def test_response_model(openai_sdk: Any, mode: str) -> None:
    import instructor

    client = instructor.from_openai(openai_sdk, mode=getattr(instructor.Mode, mode))
    city, completion = client.chat.completions.create_with_completion(
        model=MODEL, messages=ASK, max_tokens=100, response_model=City, max_retries=0
    )
    assert isinstance(city, City)
    assert completion.usage.completion_tokens > 0


def test_streamed_partials(openai_sdk: Any) -> None:
    import instructor

    client = instructor.from_openai(openai_sdk, mode=instructor.Mode.TOOLS)
    partials = list(
        client.chat.completions.create_partial(
            model=MODEL, messages=ASK, max_tokens=100, response_model=City, max_retries=0
        )
    )
    assert len(partials) > 1
    last = partials[-1]
    City.model_validate(last.model_dump())


def test_async_response_model(base_url: str) -> None:
    import asyncio

    import instructor
    import openai

    async def run() -> City:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as sdk:
            client = instructor.from_openai(sdk, mode=instructor.Mode.TOOLS)
            return await client.chat.completions.create(
                model=MODEL, messages=ASK, max_tokens=100, response_model=City, max_retries=0
            )

    assert isinstance(asyncio.run(run()), City)
