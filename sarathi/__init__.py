"""Sarathi: an LLM serving engine with vAttention KV caching and AdaptiVocab vocabularies."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sarathi.entrypoints.llm import LLM
    from sarathi.inputs import TextPrompt, TokensPrompt
    from sarathi.outputs import CompletionOutput, Logprob, RequestOutput
    from sarathi.sampling_params import SamplingParams, StructuredOutputsParams

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "CompletionOutput",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "StructuredOutputsParams",
    "TextPrompt",
    "TokensPrompt",
    "__version__",
]

# Imported on first use: ``python -m sarathi`` imports this package before its command line
# runs, and LLM pulls in torch and transformers (seconds), so an eager import would put a
# Ctrl-C pressed during start-up outside the command line's handling (a traceback).
_LAZY = {
    "LLM": "sarathi.entrypoints.llm",
    "CompletionOutput": "sarathi.outputs",
    "Logprob": "sarathi.outputs",
    "RequestOutput": "sarathi.outputs",
    "SamplingParams": "sarathi.sampling_params",
    "StructuredOutputsParams": "sarathi.sampling_params",
    "TextPrompt": "sarathi.inputs",
    "TokensPrompt": "sarathi.inputs",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sarathi' has no attribute {name!r}")
