"""Turning chat messages into prompt token ids with the tokenizer's (or --chat-template's)
Jinja template. Template failures are the client's or the operator's problem, never a 500."""

from __future__ import annotations

import os
from typing import Any

from jinja2 import TemplateSyntaxError

from sarathi.entrypoints.openai_server.errors import bad_request
from sarathi.entrypoints.openai_server.protocol import ChatMessage
from sarathi.transformers_utils.chat import (
    ChatTemplateError,
    EffortError,
    NoChatTemplate,
    ReasoningEffort,
    TemplateKwargsError,
    arguments_object,
    conversation_ids,
    reasoning_fields,
    with_effort,
)


def load_chat_template(value: str | None) -> str | None:
    """``--chat-template``'s template: the text of the file it names or, as vLLM takes it, the
    template itself (text with Jinja's ``{{`` or ``{%``). Raises ValueError naming the flag."""
    if value is None:
        return None
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                template = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--chat-template: cannot read {value!r}: {e}") from e
        where = f"{value!r} is"
    elif "{{" in value or "{%" in value:
        template, where = value, "the template is"
    else:
        what = "is a folder" if os.path.isdir(value) else "is not a file"
        raise ValueError(
            f"--chat-template: {value!r} {what}; give a Jinja template file or the template's text"
        )
    problem = _syntax_error(template)
    if problem is not None:
        # Found at start-up: on the first chat request it would be each client's 400 ("the
        # chat template failed on these messages") for the operator's mistake.
        raise ValueError(f"--chat-template: {where} not valid Jinja: {problem}")
    return template


def _syntax_error(template: str) -> str | None:
    """Jinja's complaint about the template's syntax, compiled as transformers compiles it
    (its extensions and filters); None when it parses or cannot be checked here."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # another transformers: found on the first chat request instead
        return None
    try:
        _compile_jinja_template(template)
    except TemplateSyntaxError as e:
        return f"line {e.lineno}: {e.message}"
    except ImportError:  # jinja2 too old for transformers: the first request says so
        return None
    return None


def _template_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text()}
    if m.name:
        out["name"] = m.name
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    out.update(reasoning_fields(m.role, m.reasoning, m.reasoning_content))
    if m.tool_calls:
        # Templates write the arguments with ``tojson``: give them the object, not its text.
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.function.name,
                    "arguments": arguments_object(c.function.arguments),
                },
            }
            for c in m.tool_calls
        ]
    return out


def request_template_kwargs(
    tokenizer: Any,
    template: str | None,
    tools: list[dict[str, Any]] | None,
    effort: ReasoningEffort | None,
    template_kwargs: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The template variables a chat request renders with: its ``chat_template_kwargs`` and
    what its reasoning effort sets (``with_effort``); an effort the template cannot honour
    is the client's 400."""
    try:
        return with_effort(tokenizer, template, tools, effort, template_kwargs)
    except EffortError as e:
        raise bad_request(str(e), "reasoning_effort") from e
    except ChatTemplateError as e:
        raise bad_request(str(e), "messages") from e


def chat_prompt_ids(
    tokenizer: Any,
    messages: list[ChatMessage],
    template: str | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
    tools: list[dict[str, Any]] | None = None,
    template_kwargs: dict[str, Any] | None = None,
    documents: list[dict[str, str]] | None = None,
    content_format: str = "auto",
) -> list[int]:
    """The prompt of a chat request, as ``LLM.chat`` renders it (``conversation_ids``);
    what the template refuses is the client's 400 (or the operator's, for no template)."""
    try:
        return conversation_ids(
            tokenizer,
            [_template_message(m) for m in messages],
            template,
            add_generation_prompt,
            continue_final_message,
            tools,
            template_kwargs,
            add_special_tokens,
            documents,
            content_format,
        )
    except NoChatTemplate as e:
        raise bad_request(
            "this model's tokenizer has no chat template; start the server with "
            "--chat-template FILE",
            "messages",
        ) from e
    except TemplateKwargsError as e:
        raise bad_request(str(e), "chat_template_kwargs") from e
    except ChatTemplateError as e:
        raise bad_request(str(e), "messages") from e
