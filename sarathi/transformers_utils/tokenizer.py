"""Tokenizer loading: a Hugging Face tokenizer, or an AdaptiVocab PatchTokenizer over one."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from sarathi.transformers_utils.hub import MAIN_BRANCH, HubOptions, resolve_model_path

if TYPE_CHECKING:
    from adaptivocab import PatchTokenizer


def get_tokenizer(
    name_or_path: str,
    patch_tokenizer: str | None = None,
    *,
    named_by_user: bool = False,
    hub: HubOptions = MAIN_BRANCH,
) -> Any:
    """Return the tokenizer the engine should use for text in and out.

    With ``patch_tokenizer`` the AdaptiVocab PatchTokenizer folder is loaded (it carries its
    base tokenizer inside); otherwise the Hugging Face tokenizer of ``name_or_path``: the
    model folder's, or the one --tokenizer names (``named_by_user``), a hub id fetched as
    ``hub`` says (``resolve_model_path``).
    """
    if patch_tokenizer is not None:
        return load_patch_tokenizer(patch_tokenizer)
    path = resolve_model_path(name_or_path, "tokenizer", hub)
    if is_patch_tokenizer_dir(path):
        return load_patch_tokenizer(path)
    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        missing = f"holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})"
        if named_by_user:
            # Advice to pass --tokenizer to a user who did would send them in a circle.
            raise ValueError(
                f"--tokenizer {name_or_path!r} {missing}; give a folder or hub id that has one"
            )
        raise ValueError(
            f"{name_or_path!r} {missing}; pass "
            "--tokenizer FOLDER_OR_ID, or --skip-tokenizer-init to serve token ids only"
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, ImportError) as e:
        raise ValueError(f"cannot load a tokenizer from {name_or_path!r}: {e}") from e
    _silence_length_warning(tokenizer)
    return tokenizer


# transformers warns once that a text longer than model_max_length "will result in indexing
# errors". The engine checks every prompt against the context itself (a clear error, or the
# cut truncate_prompt_tokens asks for), so the warning only misleads: it was logged beside
# the engine's own error. Marking it as given is transformers' own way of warning only once.
_LENGTH_WARNING = "sequence-length-is-longer-than-the-specified-maximum"


def _silence_length_warning(tokenizer: Any) -> None:
    given = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(given, dict):
        given[_LENGTH_WARNING] = True


# Files from which transformers builds a tokenizer (fast JSON, SentencePiece, BPE, WordPiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


def is_patch_tokenizer_dir(path: str) -> bool:
    """A folder written by ``adaptivocab build`` / ``patch-model`` / ``finetune``."""
    return os.path.isfile(os.path.join(path, "patch.json"))


def max_token_bytes(tokenizer: Any) -> int:
    """An upper bound on the bytes of text one token stands for: the longest vocabulary
    string in UTF-8, times 4 for normalizers that shrink text (NFKC folds a 3-byte ligature
    into 2 letters). A text longer than ``max_len * max_token_bytes`` bytes cannot fit
    ``max_len`` tokens, so it can be refused without tokenizing it."""
    longest = max((len(t.encode("utf-8")) for t in tokenizer.get_vocab()), default=16)
    return 4 * max(longest, 1)


def as_patch_tokenizer(tokenizer: Any) -> PatchTokenizer | None:
    """The tokenizer itself if it is an AdaptiVocab PatchTokenizer, else None."""
    from adaptivocab import PatchTokenizer

    return tokenizer if isinstance(tokenizer, PatchTokenizer) else None


def load_patch_tokenizer(path: str) -> PatchTokenizer:
    from adaptivocab import AdaptiVocabError, PatchTokenizer

    try:
        return PatchTokenizer.from_pretrained(path)
    except (AdaptiVocabError, OSError) as e:
        raise ValueError(f"cannot load the patch tokenizer {path!r}: {e}") from e


def tokenizer_eos_id(tokenizer: Any) -> int | None:
    """The tokenizer's own EOS id (None without a tokenizer, or where it names none)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return None if eos is None else int(eos)


def eos_token_ids(tokenizer: Any, model_path: str | None) -> set[int]:
    """EOS ids: the tokenizer's, plus any listed in the model's generation_config.json."""
    ids: set[int] = set()
    if (eos := tokenizer_eos_id(tokenizer)) is not None:
        ids.add(eos)
    if model_path:
        gen = os.path.join(model_path, "generation_config.json")
        if os.path.isfile(gen):
            with open(gen, encoding="utf-8") as f:
                value = json.load(f).get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
    return ids


def tokenizer_description(
    tokenizer: Any, chat_template: str | None, max_len: int
) -> dict[str, Any]:
    """What a remote client needs to tokenize as the server does: the special tokens, the
    chat template and the vocabulary's size; for a PatchTokenizer, a warning that its ids
    are not the base tokenizer's. No filesystem path is included."""
    patch = as_patch_tokenizer(tokenizer)
    base = patch.base_tokenizer if patch is not None else tokenizer
    template = chat_template or getattr(tokenizer, "chat_template", None)
    info: dict[str, Any] = {
        "tokenizer_class": type(base).__name__,
        "vocab_size": len(tokenizer),
        "model_max_length": max_len,
        "chat_template": template if isinstance(template, str) else None,
    }
    for name in ("bos", "eos", "pad", "unk"):
        token = getattr(tokenizer, f"{name}_token", None)
        info[f"{name}_token"] = token if isinstance(token, str) else None
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        info[f"{name}_token_id"] = token_id if isinstance(token_id, int) else None
    info["additional_special_tokens"] = [
        t for t in getattr(tokenizer, "all_special_tokens", []) if isinstance(t, str)
    ]
    if patch is not None:
        info["adaptivocab"] = {
            "note": (
                "an AdaptiVocab PatchTokenizer: ids in removed_ids stand for domain n-grams, "
                "not for the base tokenizer's tokens; tokenize through /tokenize"
            ),
            "base_vocab_size": len(patch.base_tokenizer),
            "swapped_tokens": len(patch.ngram_pieces),
            "removed_ids": sorted(patch.removed_ids),
            "reduction_ratio": patch.reduction_ratio,
        }
    return info
