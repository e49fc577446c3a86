"""AdaptiVocab: domain vocabulary adaptation for BPE tokenizers (arXiv 2503.19693).

A standalone library (it never imports the serving engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adaptivocab.base import TokenizerKind
    from adaptivocab.builder import BuildConfig, build_patch
    from adaptivocab.detok import IncrementalDecoder, detokenize_incrementally, initial_offsets
    from adaptivocab.embeddings import check_vocab, patch_embeddings, patch_state_dict_rows
    from adaptivocab.errors import AdaptiVocabError
    from adaptivocab.eval import bits_per_byte
    from adaptivocab.model_io import patch_model_folder
    from adaptivocab.patch import VocabPatch
    from adaptivocab.stats import measure_reduction
    from adaptivocab.tokenizer import PatchTokenizer

# Every name is imported on first use: ``python -m adaptivocab`` imports this package before
# its command line installs its Ctrl-C handling, and the tokenizer modules pull in
# transformers (seconds): an eager import put a Ctrl-C pressed then outside that handling
# (a traceback). Torch, likewise, only loads with the embedding functions, so a
# tokenizer-only user (a server's front end) does not pay for it.
_LAZY = {
    "TokenizerKind": "adaptivocab.base",
    "BuildConfig": "adaptivocab.builder",
    "build_patch": "adaptivocab.builder",
    "IncrementalDecoder": "adaptivocab.detok",
    "detokenize_incrementally": "adaptivocab.detok",
    "initial_offsets": "adaptivocab.detok",
    "AdaptiVocabError": "adaptivocab.errors",
    "VocabPatch": "adaptivocab.patch",
    "measure_reduction": "adaptivocab.stats",
    "PatchTokenizer": "adaptivocab.tokenizer",
    "patch_embeddings": "adaptivocab.embeddings",
    "patch_state_dict_rows": "adaptivocab.embeddings",
    "check_vocab": "adaptivocab.embeddings",
    "patch_model_folder": "adaptivocab.model_io",
    "bits_per_byte": "adaptivocab.eval",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptivocab' has no attribute {name!r}")


__all__ = [
    "AdaptiVocabError",
    "BuildConfig",
    "IncrementalDecoder",
    "PatchTokenizer",
    "TokenizerKind",
    "VocabPatch",
    "bits_per_byte",
    "build_patch",
    "check_vocab",
    "detokenize_incrementally",
    "initial_offsets",
    "measure_reduction",
    "patch_embeddings",
    "patch_model_folder",
    "patch_state_dict_rows",
]
