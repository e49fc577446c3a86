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

# Torch is imported only when the embedding functions are first used, so a
# tokenizer-only user (a server's front end) does not pay for it.
_LAZY = {
    "patch_embeddings": "adaptivocab.embeddings",
    "patch_state_dict_rows": "adaptivocab.embeddings",
    "check_vocab": "adaptivocab.embeddings",
    "patch_model_folder": "adaptivocab.model_io",
    "bits_per_byte": "adaptivocab.eval",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

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
