"""vLLM's prompt dicts as types (``from vllm.inputs import TokensPrompt``): ``LLM.generate``
takes them, and at run time they are plain dicts."""

from __future__ import annotations

from typing import TypedDict


class TextPrompt(TypedDict, total=False):
    """A prompt as text: ``{"prompt": text}``, with an optional ``cache_salt`` (it shares
    prefix-cache blocks only with prompts of the same salt)."""

    prompt: str
    cache_salt: str


class TokensPrompt(TypedDict, total=False):
    """A prompt as token ids: ``{"prompt_token_ids": ids}``, with their text as ``prompt``
    (reported as the output's prompt, never tokenized) and an optional ``cache_salt``."""

    prompt_token_ids: list[int]
    prompt: str
    cache_salt: str
