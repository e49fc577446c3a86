"""Sarathi: an LLM serving engine with vAttention KV caching and AdaptiVocab vocabularies."""

from sarathi.entrypoints.llm import LLM
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
    "__version__",
]
