"""Turning chat messages into prompt token ids with the tokenizer's (or --chat-template's)
Jinja template. Template failures are the client's or the operator's problem, never a 500."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import TemplateError

from sarathi.entrypoints.openai_server.errors import bad_request
from sarathi.entrypoints.openai_server.protocol import ChatMessage


def load_chat_template(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _template_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text()}
    if m.name:
        out["name"] = m.name
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        # Templates write the arguments with ``tojson``: give them the object, not its text.
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": _object(c.function.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def _object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def render_chat(
    tokenizer: Any,
    messages: list[ChatMessage],
    template: str | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise bad_request(
            "this model's tokenizer has no chat template; start the server with "
            "--chat-template FILE",
            "messages",
        )
    if continue_final_message and add_generation_prompt:
        add_generation_prompt = False
    conversation = [_template_message(m) for m in messages]
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
    if tools:
        kwargs["tools"] = tools
    if continue_final_message:
        kwargs["continue_final_message"] = True
    if template is not None:
        kwargs["chat_template"] = template
    try:
        return tokenizer.apply_chat_template(conversation, **kwargs)
    except (TemplateError, ValueError, TypeError, KeyError, IndexError) as e:
        raise bad_request(f"the chat template failed on these messages: {e}", "messages") from e


def chat_prompt_ids(
    tokenizer: Any,
    messages: list[ChatMessage],
    template: str | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    text = render_chat(
        tokenizer, messages, template, add_generation_prompt, continue_final_message, tools
    )
    # The template already wrote any BOS it wants; adding special tokens would double it.
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
