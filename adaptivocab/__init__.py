"""AdaptiVocab: domain vocabulary adaptation for BPE tokenizers (arXiv 2503.19693).

A standalone library (it never imports the serving engine).
"""

from adaptivocab.base import TokenizerKind
from adaptivocab.builder import BuildConfig, build_patch
from adaptivocab.detok import IncrementalDecoder, detokenize_incrementally, initial_offsets
from adaptivocab.errors import AdaptiVocabError
from adaptivocab.patch import VocabPatch
from adaptivocab.stats import measure_reduction
from adaptivocab.tokenizer import PatchTokenizer

__all__ = [
    "AdaptiVocabError",
    "BuildConfig",
    "IncrementalDecoder",
    "PatchTokenizer",
    "TokenizerKind",
    "VocabPatch",
    "build_patch",
    "detokenize_incrementally",
    "initial_offsets",
    "measure_reduction",
]
