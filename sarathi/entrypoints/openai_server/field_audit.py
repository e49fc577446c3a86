"""Nothing a client sends is silently dropped.

Every field of OpenAI's completions and chat-completions requests, and of vLLM's extras, is
either honoured (a field of the request models in ``protocol.py``) or, when set to something
this server does not do, refused with a 400 that names it: an agent that asks for tools or a
JSON schema must not get plain text back as if it had been obeyed. Fields that are neither
OpenAI's nor vLLM's are accepted, as OpenAI's clients send extras, and logged once per name.
The Responses API (/v1/responses) has a table of its own: ``RESPONSES_UNSUPPORTED``, and
/tokenize, which renders a prompt only, refuses only what would change it:
``TOKENIZE_UNSUPPORTED``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from sarathi.entrypoints.openai_server.errors import bad_request
from sarathi.entrypoints.openai_server.protocol import ChatCompletionRequest, CompletionRequest

logger = logging.getLogger("sarathi.server")


def _unset(value: Any) -> bool:
    return value is None or value == [] or value == {}


def _null(value: Any) -> bool:
    return value is None


def _no_tools(value: Any) -> bool:
    return _unset(value) or value == "none"


def _text_only(value: Any) -> bool:
    return _unset(value) or value == ["text"]


def _off(value: Any) -> bool:
    return _unset(value) or value is False


def _zero(value: Any) -> bool:
    return value is None or value == 0


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
    # Its every option has a default, so even {} turns the search on (OpenAI searches then):
    # only null leaves it off.
    "web_search_options": (_null, "web search is not supported"),
    "reasoning_effort": (
        _unset,
        "reasoning_effort (a field of /v1/chat/completions) is not supported",
    ),
    "verbosity": (_unset, "verbosity is not supported"),
    # Blocks or scores the input and output with a moderation model: dropped, a client
    # relying on it got unmoderated text back.
    "moderation": (_unset, "moderation is not supported"),
    "store": (_off, "this server stores no completions (store must be false)"),
    "service_tier": (_default_tier, "this server has one service tier"),
    "use_beam_search": (_off, "beam search is not supported"),
    "logits_processors": (_unset, "logits processors are not supported"),
    "guided_whitespace_pattern": (
        _unset,
        "a whitespace pattern is not supported (JSON is written without free whitespace)",
    ),
    "chat_template_kwargs": (
        _unset,
        "chat_template_kwargs (a field of /v1/chat/completions and /v1/responses) is not supported",
    ),
    "chat_template": (
        _unset,
        "a per-request chat template is not supported (start the server with --chat-template)",
    ),
    "length_penalty": (
        lambda v: v is None or v == 1,
        "length_penalty (beam search) is not supported",
    ),
    "return_tokens_as_token_ids": (
        _off,
        "return_tokens_as_token_ids names logprobs' tokens, which only /v1/completions and "
        "/v1/chat/completions return",
    ),
    "return_token_ids": (_off, "return_token_ids is available on /v1/completions only"),
    "mm_processor_kwargs": (_unset, "this model takes text only (mm_processor_kwargs)"),
    # vLLM's completions take a prompt as embeddings (base64 tensors); dropped, the request
    # would be answered from its text prompt alone.
    "prompt_embeds": (
        _unset,
        "prompt embeddings are not supported (send the prompt as text or token ids)",
    ),
    # vLLM's side of truncate_prompt_tokens: "left" keeps the prompt's last tokens, as this
    # server cuts it; taken as an unknown field, "right" (keep the first tokens) got the
    # other end of the prompt with no word.
    "truncation_side": (
        lambda v: v is None or v == "left",
        'truncation_side "right" is not supported (truncate_prompt_tokens keeps the '
        'prompt\'s last tokens: truncation_side "left")',
    ),
    # vLLM's newer sampling extras: each changes the logprobs or where the output stops, so
    # taken as unknown fields they answered another request than the one sent.
    "logprob_token_ids": (
        _unset,
        "logprob_token_ids is not supported (logprobs returns the k most likely tokens)",
    ),
    "repetition_detection": (_unset, "repetition detection is not supported"),
    "max_repetition_pattern_size": (_zero, "repetition detection is not supported"),
    "min_repetition_pattern_size": (_zero, "repetition detection is not supported"),
    "repetition_min_count": (_zero, "repetition detection is not supported"),
    "thinking_token_budget": (
        lambda v: v is None or v == -1,  # -1: unlimited, vLLM's unset
        "thinking_token_budget is not supported (the reasoning is not bounded apart from "
        "max_tokens)",
    ),
    "ec_transfer_params": (_unset, "encoder-cache transfer is not supported"),
    "kv_transfer_params": (_unset, "KV-cache transfer is not supported"),
    "vllm_xargs": (_unset, "vllm_xargs is not supported"),
    # The other routes' fields, sent by a client written for them: each bounds or shapes
    # the output, and OpenAI answers an argument its route does not take with a 400. On the
    # route that owns one it is a field of the request model and never reaches this table.
    # Dropped, max_completion_tokens on /v1/completions stopped the output at max_tokens'
    # default of 16, and max_output_tokens on chat ran it to the end of the context.
    "max_completion_tokens": (
        _unset,
        "max_completion_tokens (chat's; /v1/completions takes max_tokens) is not supported",
    ),
    "top_logprobs": (
        lambda v: v is None or v == 0,
        "top_logprobs (chat's; /v1/completions takes logprobs, a count) is not supported",
    ),
    "best_of": (
        lambda v: v is None or v == 1,
        "best_of (a field of /v1/completions) is not supported",
    ),
    "suffix": (
        lambda v: v is None or v == "",
        "suffix (a field of /v1/completions) is not supported",
    ),
    "max_output_tokens": (
        _unset,
        "max_output_tokens (the Responses API's; this route takes max_tokens) is not supported",
    ),
    "instructions": (
        _unset,
        "instructions (the Responses API's; send a system message) is not supported",
    ),
}

# Fields of the Responses request model that the chat table refuses (they are another
# route's there): never extras on /v1/responses, so they are left out of its table.
_RESPONSES_OWN = frozenset(
    {"tools", "tool_choice", "max_output_tokens", "instructions", "chat_template_kwargs"}
)

# Fields this server takes and needs nothing for: OpenAI's bookkeeping and prompt-cache
# hints (the prefix cache here is automatic, and no option changes an output), vLLM's
# request id where a route's request model lacks it (the generation routes' name their
# responses with it), ``parallel_tool_calls`` on /v1/completions.
ACCEPTED = frozenset(
    {
        "metadata",
        "parallel_tool_calls",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "request_id",
    }
)


def _default_image_options(value: Any) -> bool:
    return _unset(value) or (
        isinstance(value, dict) and all(v in (None, "auto", "disabled") for v in value.values())
    )


def _no_prewarm(value: Any) -> bool:
    return _unset(value) or (isinstance(value, dict) and not value.get("prewarm"))


# Includable output data with nothing to include here: reasoning items (--reasoning-parser)
# carry their text in the clear, never encrypted.
_VACUOUS_INCLUDES = frozenset({"reasoning.encrypted_content"})

_CONVERSATION_INSTEAD = "send the whole conversation as input items, or use previous_response_id"

# POST /v1/responses: OpenAI's Responses API, the subset served here. The chat table's fields
# that mean the same here (vLLM's extras, audio, ...), then the Responses API's own.
RESPONSES_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{
        name: rule
        for name, rule in UNSUPPORTED.items()
        # Fields of the request model here (tools, store: a response is stored).
        if name not in _RESPONSES_OWN | {"store"}
    },
    # The other routes' names for what a response asks for otherwise: a client that sends
    # them must not get, say, an unbounded output back.
    "messages": (_unset, "messages (chat's; a response takes input) is not supported"),
    "reasoning_effort": (
        _unset,
        "reasoning_effort (chat's; a response takes reasoning.effort) is not supported",
    ),
    "truncate_prompt_tokens": (
        _unset,
        "truncate_prompt_tokens (the other routes'; a response takes truncation) is not supported",
    ),
    "documents": (_unset, "documents (a field of chat) are not supported"),
    "max_tokens": (
        _unset,
        "max_tokens (the other routes'; a response takes max_output_tokens) is not supported",
    ),
    "max_completion_tokens": (
        _unset,
        "max_completion_tokens (chat's; a response takes max_output_tokens) is not supported",
    ),
    "logprobs": (_off, "logprobs on responses are not supported"),
    "echo": (_off, "echo (a field of /v1/completions) is not supported"),
    "conversation": (_unset, f"a stored conversation ({_CONVERSATION_INSTEAD}) is not supported"),
    "background_options": (
        _unset,
        "background_options (resuming a background response's stream) are not supported",
    ),
    "context_management": (_unset, "context management (compaction) is not supported"),
    "moderation": (_unset, "moderation is not supported"),
    "prompt": (_unset, "stored prompt templates are not supported"),
    "include": (
        lambda v: _unset(v) or (isinstance(v, list) and all(x in _VACUOUS_INCLUDES for x in v)),
        "include (logprobs, tool sources, image urls; reasoning.encrypted_content is taken, "
        "with nothing to include) is not supported",
    ),
    "top_logprobs": (lambda v: v is None or v == 0, "logprobs on responses are not supported"),
    "truncation": (
        lambda v: v is None or v == "disabled",
        'truncation "auto" is not supported (an input longer than the context is a 400)',
    ),
    "image": (_default_image_options, "image options are not supported (text only)"),
    "access_programs": (_unset, "access programs are not supported"),
    "prompt_cache_options": (_no_prewarm, "prompt cache prewarming is not supported"),
}

# Fields of the Responses API with nothing to do here (prompt_cache_retention is a field
# of the request model, echoed back).
RESPONSES_ACCEPTED = ACCEPTED

# POST /tokenize renders a prompt and generates nothing. Clients count a request's prompt by
# sending its body there, so the fields of the output (tool_choice, max_completion_tokens,
# top_logprobs, sampling, ...) are taken: refused, they read as another route's. Only what
# would change the prompt and is not done is refused (tools and chat_template_kwargs are
# fields of its messages form; on its prompt form, with no template, they would be dropped).
_TOKENIZE_PROMPT_FIELDS = frozenset(
    {
        "tools",
        "functions",
        "chat_template_kwargs",
        "chat_template",
        "documents",
        "mm_processor_kwargs",
        "prompt_embeds",
        "suffix",
        "instructions",
    }
)
TOKENIZE_UNSUPPORTED = {
    **{n: r for n, r in UNSUPPORTED.items() if n in _TOKENIZE_PROMPT_FIELDS},
    "documents": (_unset, "documents (a field of /tokenize with messages) are not supported"),
    # A field of completions and chat that cuts their prompt: taken here, the count would
    # be of the whole prompt, not the one the route sends.
    "truncate_prompt_tokens": (
        _unset,
        "truncate_prompt_tokens is not supported on /tokenize (the count is the whole prompt's)",
    ),
}


# The fields /tokenize takes without a warning: the generation routes' own, and those their
# tables refuse for the output.
TOKENIZE_ACCEPTED = frozenset(
    ACCEPTED
    | {
        f.alias or name
        for model in (ChatCompletionRequest, CompletionRequest)
        for name, f in model.model_fields.items()
    }
    | (set(UNSUPPORTED) - _TOKENIZE_PROMPT_FIELDS)
)


def audit(
    req: BaseModel,
    warned: set[str],
    unsupported: Mapping[str, tuple[Callable[[Any], bool], str]] = UNSUPPORTED,
    accepted: frozenset[str] = ACCEPTED,
) -> None:
    """Refuse a request that sets a field this server would otherwise drop; log the fields
    it does not know, once per name (``warned`` is the server's memory of them). The tables
    are the chat and completions routes' unless given."""
    extras = req.model_extra or {}
    for name, value in extras.items():
        rule = unsupported.get(name)
        if rule is not None:
            ok, message = rule
            if not ok(value):
                # The table's messages end variously ("... not supported", "... (store must
                # be false)"), so nothing is appended that must continue their grammar.
                raise bad_request(f"{message}; remove '{name}'", name)
        elif name not in accepted and name not in warned:
            warned.add(name)
            logger.warning("ignoring the request field %r, unknown to this server", name)
