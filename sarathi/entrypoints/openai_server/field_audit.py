"""Nothing a client sends is silently dropped.

Every field of OpenAI's completions and chat-completions requests, and of vLLM's extras, is
either honoured (a field of the request models in ``protocol.py``) or, when set to something
this server does not do, refused with a 400 that names it: an agent that asks for tools or a
JSON schema must not get plain text back as if it had been obeyed. Fields that are neither
OpenAI's nor vLLM's are accepted, as OpenAI's clients send extras, and logged once per name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from sarathi.entrypoints.openai_server.errors import bad_request

logger = logging.getLogger("sarathi.server")


def _unset(value: Any) -> bool:
    return value is None or value == [] or value == {}


def _no_tools(value: Any) -> bool:
    return _unset(value) or value == "none"


def _text_only(value: Any) -> bool:
    return _unset(value) or value == ["text"]


def _off(value: Any) -> bool:
    return _unset(value) or value is False


def _default_tier(value: Any) -> bool:
    return _unset(value) or value in ("auto", "default")


# field -> (accepted when, what to say). OpenAI's fields first, then vLLM's extras.
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    # Fields of the chat route only: on /v1/completions they arrive as extras.
    "tools": (_unset, "tool calling is available on /v1/chat/completions only"),
    "tool_choice": (_no_tools, "tool calling is available on /v1/chat/completions only"),
    "functions": (_unset, "functions (OpenAI's deprecated form) are not supported; send tools"),
    "function_call": (
        _no_tools,
        "function_call (OpenAI's deprecated form) is not supported; send tool_choice",
    ),
    "audio": (_unset, "audio output is not supported"),
    "modalities": (_text_only, "only the text modality is supported"),
    "prediction": (_unset, "predicted outputs are not supported"),
    "web_search_options": (_unset, "web search is not supported"),
    "reasoning_effort": (_unset, "reasoning_effort is not supported"),
    "verbosity": (_unset, "verbosity is not supported"),
    "store": (_off, "this server stores no completions (store must be false)"),
    "service_tier": (_default_tier, "this server has one service tier"),
    "use_beam_search": (_off, "beam search is not supported"),
    "logits_processors": (_unset, "logits processors are not supported"),
    "truncate_prompt_tokens": (_unset, "truncate_prompt_tokens is not supported"),
    "guided_whitespace_pattern": (
        _unset,
        "a whitespace pattern is not supported (JSON is written without free whitespace)",
    ),
    "chat_template_kwargs": (_unset, "chat_template_kwargs is not supported"),
    "chat_template": (
        _unset,
        "a per-request chat template is not supported (start the server with --chat-template)",
    ),
    "documents": (_unset, "documents are not supported"),
    "length_penalty": (
        lambda v: v is None or v == 1,
        "length_penalty (beam search) is not supported",
    ),
    "spaces_between_special_tokens": (
        lambda v: v is None or v is True,
        "spaces_between_special_tokens=false is not supported",
    ),
    "echo": (_off, "echo on chat completions is not supported"),
    "priority": (lambda v: v is None or v == 0, "request priorities are not supported"),
    "return_tokens_as_token_ids": (_off, "return_tokens_as_token_ids is not supported"),
    "return_token_ids": (_off, "return_token_ids is not supported"),
    "mm_processor_kwargs": (_unset, "this model takes text only (mm_processor_kwargs)"),
    "kv_transfer_params": (_unset, "KV-cache transfer is not supported"),
    "vllm_xargs": (_unset, "vllm_xargs is not supported"),
}

# Fields this server takes and needs nothing for: OpenAI's bookkeeping, vLLM's request id
# and prefix-cache salt (no prefix cache yet), ``parallel_tool_calls`` on /v1/completions.
ACCEPTED = frozenset(
    {
        "metadata",
        "parallel_tool_calls",
        "prompt_cache_key",
        "safety_identifier",
        "request_id",
        "cache_salt",
    }
)


def audit(req: BaseModel, warned: set[str]) -> None:
    """Refuse a request that sets a field this server would otherwise drop; log the fields
    it does not know, once per name (``warned`` is the server's memory of them)."""
    extras = req.model_extra or {}
    for name, value in extras.items():
        rule = UNSUPPORTED.get(name)
        if rule is not None:
            accepted, message = rule
            if not accepted(value):
                raise bad_request(f"{message} by this server; remove '{name}'", name)
        elif name not in ACCEPTED and name not in warned:
            warned.add(name)
            logger.warning("ignoring the request field %r, unknown to this server", name)
