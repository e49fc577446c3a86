"""``langchain-openai`` against the server: ``invoke``, ``stream``, ``bind_tools``,
``with_structured_output`` (``function_calling``, ``json_schema``, ``json_mode``), a tool
round trip, and the completions model."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from clients_common import API_KEY, MODEL
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field


class City(BaseModel):
    """A city and its country."""

    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    country: Literal["France", "Norway", "Italy"]


class Seat(BaseModel):
    row: int = Field(ge=1, le=30)
    cls: Literal["eco", "biz"]


class Book(BaseModel):
    """Book a seat (a nested model: a $defs reference in its schema)."""

    seat: Seat
    note: str | None = Field(default=None, max_length=10)


class WeatherArgs(BaseModel):
    # Bounded, as every free value in these tests: a random-weight model never ends a number
    # or a string of its own accord, so an unbounded one would run to max_tokens.
    city: Literal["Paris", "Oslo", "Rome"]
    days: int = Field(ge=1, le=7)


@tool(args_schema=WeatherArgs)
def get_weather(city: str, days: int) -> str:
    """The weather in a city for the next days."""
    return f"{city}: sunny for {days} days"


def _chat(base_url: str, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    defaults: dict[str, Any] = {"max_tokens": 8, "temperature": 0, "max_retries": 0}
    return ChatOpenAI(
        model=MODEL, base_url=base_url, api_key=API_KEY, timeout=60, **{**defaults, **kwargs}
    )


def test_invoke(base_url: str) -> None:
    msg = _chat(base_url).invoke("Tell me a story")
    assert isinstance(msg, AIMessage) and isinstance(msg.content, str)
    assert msg.response_metadata["finish_reason"] in ("stop", "length")
    assert msg.response_metadata["model_name"] == MODEL
    usage = msg.usage_metadata
    assert usage and 0 < usage["output_tokens"] <= 8 and usage["input_tokens"] > 0


def test_stream_equals_invoke(base_url: str) -> None:
    llm = _chat(base_url, stream_usage=True)
    full = llm.invoke("Tell me a story")
    chunks = list(llm.stream("Tell me a story"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == full.content
    assert total.usage_metadata == full.usage_metadata


async def _ainvoke_and_astream(llm: Any) -> tuple[Any, list[Any]]:
    return await llm.ainvoke("Hi"), [c async for c in llm.astream("Hi")]


def test_async(base_url: str) -> None:
    import asyncio

    msg, chunks = asyncio.run(_ainvoke_and_astream(_chat(base_url, max_tokens=4)))
    assert isinstance(msg.content, str) and chunks


@pytest.mark.parametrize("tool_choice", ["get_weather", "any"])
def test_bind_tools_forced(base_url: str, tool_choice: str) -> None:
    llm = _chat(base_url, max_tokens=60).bind_tools(
        [get_weather], tool_choice=tool_choice, parallel_tool_calls=False
    )
    msg = llm.invoke("Weather in Paris?")
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    assert call["args"]["city"] in ("Paris", "Oslo", "Rome")
    assert isinstance(call["args"]["days"], int)
    assert not msg.invalid_tool_calls


def test_bind_tools_auto(base_url: str) -> None:
    """Auto (LangChain's default): the model may answer or call; the random model answers."""
    msg = _chat(base_url).bind_tools([get_weather]).invoke("Weather in Paris?")
    assert isinstance(msg, AIMessage) and not msg.invalid_tool_calls


def test_streamed_tool_call(base_url: str) -> None:
    llm = _chat(base_url, max_tokens=60).bind_tools([get_weather], tool_choice="get_weather")
    total = None
    for chunk in llm.stream("Weather in Oslo?"):
        total = chunk if total is None else total + chunk
    assert total is not None
    (call,) = total.tool_calls
    assert call["name"] == "get_weather" and call["args"]["city"] in ("Paris", "Oslo", "Rome")


def test_a_tool_round_trip(base_url: str) -> None:
    llm = _chat(base_url, max_tokens=60)
    messages: list[Any] = [HumanMessage("Weather in Rome for two days?")]
    ai = llm.bind_tools([get_weather], tool_choice="any", parallel_tool_calls=False).invoke(
        messages
    )
    messages.append(ai)
    for call in ai.tool_calls:
        result = get_weather.invoke(call)
        assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
        messages.append(result)
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert isinstance(final, AIMessage) and isinstance(final.content, str)
    assert not final.tool_calls


@pytest.mark.parametrize("model", [City, Book])
@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_with_structured_output_pydantic(base_url: str, method: str, model: type) -> None:
    llm = _chat(base_url, max_tokens=100).with_structured_output(model, method=method)
    assert isinstance(llm.invoke("A city, please"), model)


def test_bind_tools_with_nested_models(base_url: str) -> None:
    llm = _chat(base_url, max_tokens=100).bind_tools(
        [Book, get_weather], tool_choice="any", parallel_tool_calls=False
    )
    (call,) = llm.invoke("Book a seat").tool_calls
    if call["name"] == "Book":
        Book.model_validate(call["args"])
    else:
        WeatherArgs.model_validate(call["args"])


def test_with_structured_output_include_raw(base_url: str) -> None:
    llm = _chat(base_url, max_tokens=100).with_structured_output(
        City, method="json_schema", include_raw=True
    )
    out = llm.invoke("A city, please")
    assert isinstance(out["parsed"], City) and out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)


def test_with_structured_output_json_mode(base_url: str) -> None:
    """json_mode holds the output to a JSON object, not to the schema (as OpenAI's does): the
    random model's object is parsed as a dict. (Seeded: at temperature 0 this model writes
    one string key until max_tokens.)"""
    llm = _chat(base_url, max_tokens=100, temperature=1.0, seed=0)
    out = llm.with_structured_output(City.model_json_schema(), method="json_mode").invoke(
        "A city, as JSON"
    )
    assert isinstance(out, dict)


def test_completions_model(base_url: str) -> None:
    from langchain_openai import OpenAI

    llm = OpenAI(
        model=MODEL,
        base_url=base_url,
        api_key=API_KEY,
        max_tokens=6,
        temperature=0,
        max_retries=0,
    )
    assert isinstance(llm.invoke("Hello, my name is"), str)
    assert "".join(llm.stream("Hello, my name is")) == llm.invoke("Hello, my name is")
