"""The ``openai`` SDK against the server: chat, completions, streaming, ``parse`` with a
Pydantic model (as ``response_format`` and as a strict tool), tools, ``models``, errors."""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import openai
import pytest
from clients_common import API_KEY, ASK, MODEL, WEATHER_TOOL
from pydantic import BaseModel, Field


class City(BaseModel):
    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    capital: bool
    country: Literal["France", "Norway", "Italy"]


class GetWeather(BaseModel):
    """Weather in a city."""

    city: Literal["Paris", "Oslo", "Rome"]
    unit: Literal["c", "f"]


def _ask_weather(client: Any, **kwargs: Any) -> Any:
    """ASK with the weather tool, one call at most."""
    return client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=60,
        tools=[WEATHER_TOOL],
        parallel_tool_calls=False,
        **kwargs,
    )


def _check_weather_args(arguments: str) -> None:
    args = json.loads(arguments)
    assert args["city"] in ("Paris", "Oslo", "Rome") and 1 <= args["days"] <= 7


def test_chat(openai_client: Any) -> None:
    r = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, temperature=0
    )
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completions(openai_client: Any) -> None:
    r = openai_client.completions.create(
        model=MODEL, prompt=["Hello, my name is", "The sky"], max_tokens=6, temperature=0
    )
    assert r.object == "text_completion"
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(isinstance(c.text, str) for c in r.choices)
    assert r.usage.completion_tokens <= 12


def test_streamed_chat_with_usage(openai_client: Any) -> None:
    full = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=10, temperature=0
    )
    stream = openai_client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == full.choices[0].message.content
    assert finishes[-1] == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


def test_streamed_completion(openai_client: Any) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "prompt": "Once upon", "max_tokens": 10, "seed": 3}
    full = openai_client.completions.create(**kwargs)
    text = "".join(
        c.choices[0].text for c in openai_client.completions.create(stream=True, **kwargs)
    )
    assert text == full.choices[0].text


def test_parse_with_a_pydantic_model(openai_client: Any) -> None:
    r = openai_client.chat.completions.parse(
        model=MODEL, messages=ASK, max_tokens=120, response_format=City, temperature=1.0, seed=1
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(msg.parsed, City) and msg.refusal is None
    assert City.model_validate_json(msg.content) == msg.parsed


def test_parse_with_a_strict_pydantic_tool(openai_client: Any) -> None:
    r = openai_client.chat.completions.parse(
        model=MODEL,
        messages=ASK,
        max_tokens=60,
        tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(call.function.parsed_arguments, GetWeather)


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_the_stream_helper_tells_each_calls_end(openai_client: Any, tool_choice: Any) -> None:
    """``chat.completions.stream`` tells a call's end (``...arguments.done``, its arguments
    parsed) on a chunk after the call's last delta: the finish must not ride on that delta."""
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    with openai_client.chat.completions.stream(
        model=MODEL,
        messages=ASK,
        max_tokens=60,
        tools=[tool],
        tool_choice=tool_choice,
        parallel_tool_calls=False,
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    (event,) = done
    assert event.index == 0 and event.name == call.function.name == "get_weather"
    assert event.arguments == call.function.arguments
    assert isinstance(event.parsed_arguments, GetWeather)
    assert event.parsed_arguments == call.function.parsed_arguments


@pytest.mark.parametrize(
    "tool_choice,finish",
    [
        ({"type": "function", "function": {"name": "get_weather"}}, "stop"),
        ("required", "tool_calls"),
    ],
)
def test_tools(openai_client: Any, tool_choice: Any, finish: str) -> None:
    r = _ask_weather(openai_client, tool_choice=tool_choice)
    choice = r.choices[0]
    assert choice.finish_reason == finish and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    _check_weather_args(call.function.arguments)


def test_streamed_tool_call(openai_client: Any) -> None:
    stream = _ask_weather(openai_client, tool_choice="required", stream=True)
    name, arguments, ids, finish = "", "", set(), None
    for chunk in stream:
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                assert d.index == 0
                if d.id:
                    ids.add(d.id)
                name += d.function.name or ""
                arguments += d.function.arguments or ""
            finish = c.finish_reason or finish
    assert len(ids) == 1 and name == "get_weather" and finish == "tool_calls"
    _check_weather_args(arguments)


def test_a_tool_round_trip(openai_client: Any) -> None:
    first = _ask_weather(openai_client, tool_choice="required")
    msg = first.choices[0].message
    history = [
        *ASK,
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "21 C, sunny"},
    ]
    final = openai_client.chat.completions.create(
        model=MODEL, messages=history, max_tokens=6, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert isinstance(final.choices[0].message.content, str)
    assert not final.choices[0].message.tool_calls


def test_models_list_and_retrieve(openai_client: Any) -> None:
    (model,) = openai_client.models.list().data
    assert model.id == MODEL and model.object == "model"
    got = openai_client.models.retrieve(MODEL)
    assert got.id == MODEL and got.owned_by == model.owned_by
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("no-such-model")


def test_errors_are_openais_exceptions(openai_client: Any, base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=4,
            audio={"voice": "alloy", "format": "wav"},
            modalities=["text", "audio"],
        )
    assert e.value.body["param"] in ("audio", "modalities")
    with (
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()


def test_every_response_names_its_request(openai_client: Any) -> None:
    """``x-request-id``, which the SDK reads into ``request_id`` / ``_request_id``: one of
    ours, or the caller's own (a gateway's), on answers, streams and errors alike."""
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": 2}
    raw = openai_client.chat.completions.with_raw_response.create(**kwargs)
    again = openai_client.chat.completions.with_raw_response.create(**kwargs)
    assert raw.request_id and raw.request_id != again.request_id
    assert raw.parse()._request_id == raw.request_id
    mine = openai_client.chat.completions.with_raw_response.create(
        **kwargs, extra_headers={"X-Request-Id": "trace-42"}
    )
    assert mine.request_id == "trace-42"
    with openai_client.chat.completions.with_streaming_response.create(
        **kwargs, stream=True
    ) as streamed:
        assert streamed.request_id
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.models.retrieve("no-such-model")
    assert e.value.request_id


async def _async_chat(base_url: str) -> list[str]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as c:
        r = await c.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4)
        out = [r.choices[0].message.content]
        stream = await c.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4, stream=True
        )
        out += [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
        return out


def test_async_client(base_url: str) -> None:
    import asyncio

    out = asyncio.run(_async_chat(base_url))
    assert all(isinstance(t, str) for t in out)


class MealKind(str, enum.Enum):
    veg = "veg"
    fish = "fish"


class Seat(BaseModel):
    row: int = Field(ge=1, le=30)
    cls: Literal["eco", "biz"]


class Book(BaseModel):
    """Book a seat."""

    seat: Seat
    meal: MealKind


def test_parse_with_nested_models_as_tools(openai_client: Any) -> None:
    """Nested models and enums become $defs references in a tool's schema (Pydantic's way)."""
    tools = [
        openai.pydantic_function_tool(Book, name="book"),
        openai.pydantic_function_tool(GetWeather, name="get_weather"),
    ]
    for tool_choice in ("required", {"type": "function", "function": {"name": "book"}}):
        r = openai_client.chat.completions.parse(
            model=MODEL,
            messages=ASK,
            max_tokens=80,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=False,
        )
        (call,) = r.choices[0].message.tool_calls
        assert isinstance(call.function.parsed_arguments, (Book, GetWeather))
