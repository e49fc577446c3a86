"""LlamaIndex's ``OpenAILike`` against the server (optional: ``SARATHI_OPTIONAL_CLIENTS=1``):
complete (the completions route) and chat, streamed and not, async, structured prediction
with a Pydantic model, and a required tool call."""

# No `from __future__ import annotations`: LlamaIndex reads a tool's signature at run time,
# and cannot resolve string annotations.
from typing import Any, Literal

from clients_common import API_KEY, MODEL, OPTIONAL
from pydantic import BaseModel, Field

pytestmark = OPTIONAL


class City(BaseModel):
    """A city and its country."""

    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    country: Literal["France", "Norway", "Italy"]


def get_weather(city: Literal["Paris", "Oslo", "Rome"]) -> str:
    """The weather in a city."""
    return f"{city}: sunny"


def _llm(base_url: str, **kwargs: Any) -> Any:
    from llama_index.llms.openai_like import OpenAILike

    defaults: dict[str, Any] = {
        "is_chat_model": True,
        "is_function_calling_model": True,
        "context_window": 2048,
        "max_tokens": 8,
        "temperature": 0.0,
        "max_retries": 0,
        "timeout": 60,
    }
    return OpenAILike(model=MODEL, api_base=base_url, api_key=API_KEY, **{**defaults, **kwargs})


def _chat_message(text: str) -> Any:
    from llama_index.core.llms import ChatMessage

    return ChatMessage(role="user", content=text)


def test_complete_on_the_completions_route(base_url: str) -> None:
    llm = _llm(base_url, is_chat_model=False)
    full = llm.complete("Hello, my name is")
    assert isinstance(full.text, str)
    streamed = list(llm.stream_complete("Hello, my name is"))
    assert streamed[-1].text == full.text


def test_chat_and_stream_chat(base_url: str) -> None:
    llm = _llm(base_url)
    full = llm.chat([_chat_message("Tell me a story")])
    assert full.message.role == "assistant" and isinstance(full.message.content, str)
    streamed = list(llm.stream_chat([_chat_message("Tell me a story")]))
    assert streamed[-1].message.content == full.message.content


def test_async_chat(base_url: str) -> None:
    import asyncio

    r = asyncio.run(_llm(base_url).achat([_chat_message("Hi")]))
    assert isinstance(r.message.content, str)


def test_structured_predict(base_url: str) -> None:
    from llama_index.core.prompts import PromptTemplate

    llm = _llm(base_url, max_tokens=100)
    city = llm.structured_predict(
        City, PromptTemplate("A city in {country}, please"), country="Norway"
    )
    assert isinstance(city, City)
    sllm = llm.as_structured_llm(City)
    out = sllm.chat([_chat_message("A city, please")])
    assert isinstance(out.raw, City)


def test_required_tool_call(base_url: str) -> None:
    from llama_index.core.tools import FunctionTool

    tool = FunctionTool.from_defaults(fn=get_weather)
    llm = _llm(base_url, max_tokens=60)
    response = llm.chat_with_tools([tool], user_msg="Weather in Oslo?", tool_required=True)
    (call,) = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert call.tool_name == "get_weather" and call.tool_kwargs["city"] in ("Paris", "Oslo", "Rome")
    assert tool.call(**call.tool_kwargs).content.endswith("sunny")
