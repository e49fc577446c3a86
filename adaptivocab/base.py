"""What adaptivocab needs to know about a base tokenizer: its kind, merges, protected ids."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from adaptivocab.errors import AdaptiVocabError

_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class TokenizerKind(str, Enum):
    SENTENCEPIECE_BPE = "sentencepiece-bpe"  # Llama 2 / Mistral: metaspace + byte fallback
    BYTE_LEVEL_BPE = "byte-level-bpe"  # GPT-2 / Llama 3 / Qwen


# Files transformers builds a fast tokenizer from (its JSON, or a SentencePiece or BPE model
# it converts). Narrower than the engine's list (sarathi/transformers_utils/tokenizer.py),
# which also counts WordPiece and unigram files: with those alone transformers fails here
# with "Couldn't instantiate the backend tokenizer from one of: ;".
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def load_base_tokenizer(name_or_path: str | os.PathLike[str]) -> Any:
    """Load a fast Hugging Face tokenizer or raise AdaptiVocabError."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    # Hub ids are "name" or "owner/name"; anything else is a folder that is not there.
    if not os.path.exists(os.path.expanduser(name)) and (
        name.count("/") > 1 or name.startswith((".", "/", "~"))
    ):
        raise AdaptiVocabError(f"tokenizer folder not found: {name}")
    if os.path.isfile(os.path.expanduser(name)):
        # transformers takes a file for a hub id: a minute of retries offline, then the bare
        # tokenizer.json without the folder's special tokens and chat template.
        parent = os.path.dirname(name) or "."
        raise AdaptiVocabError(
            f"tokenizer {name} is a file; pass the folder that holds it ({parent})"
        )
    folder = os.path.expanduser(name)
    if os.path.isdir(folder) and not any(
        os.path.isfile(os.path.join(folder, f)) for f in _TOKENIZER_FILES
    ):
        # transformers' own words here were "Couldn't instantiate the backend tokenizer from
        # one of: ;", which names neither the folder's fault nor the way out.
        raise AdaptiVocabError(
            f"tokenizer folder {name} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "pass the folder of a Hugging Face model or tokenizer"
        )
    if not os.path.exists(folder):
        folder = _hub_snapshot(name)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdaptiVocabError(
            f"cannot load tokenizer {name_or_path!s}: {first}; pass a folder with tokenizer.json "
            "(and tokenizer_config.json) or a Hugging Face model id available offline"
        ) from exc
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise AdaptiVocabError(
            f"tokenizer {name_or_path!s} has no fast (tokenizers) backend; adaptivocab needs "
            "tokenizer.json"
        )
    return tok


def _hub_snapshot(name: str) -> str:
    """The local folder of hub id ``name``'s tokenizer files: fetched, or from the cache when
    offline. One request that fails at once offline, where transformers' own lookup retried
    each file for most of a minute and printed every retry."""
    from huggingface_hub import snapshot_download

    try:
        return str(
            snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.model", "*.jinja"])
        )
    # Any hub failure (offline and not cached, an unknown or gated id, a malformed id) ends
    # the same way: one line naming it.
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise AdaptiVocabError(
            f"cannot load tokenizer {name}: it is not a local folder and could not be fetched "
            f"from the Hugging Face hub ({type(exc).__name__}: {first}); pass a folder with "
            "tokenizer.json (and tokenizer_config.json) or a Hugging Face model id available "
            "offline"
        ) from exc


def _merge_pairs(raw: list[Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for m in raw:
        if isinstance(m, str):
            a, _, b = m.partition(" ")
        else:
            a, b = m[0], m[1]
        pairs.append((a, b))
    return pairs


def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes->unicode table (printable stand-ins for every byte)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _contains_type(node: Any, type_name: str) -> bool:
    if isinstance(node, dict):
        if node.get("type") == type_name:
            return True
        return any(_contains_type(v, type_name) for v in node.values())
    if isinstance(node, list):
        return any(_contains_type(v, type_name) for v in node)
    return False


@dataclass(frozen=True)
class BaseInfo:
    """Static facts about a base tokenizer, derived from its tokenizer.json."""

    kind: TokenizerKind
    vocab_size: int  # len(tokenizer): every id the tokenizer can produce
    id_to_token: tuple[str, ...]
    protected: frozenset[int]  # special / added / byte-fallback / single-character tokens
    merges: dict[int, tuple[int, int]]  # token id -> the (first) merge that builds it

    def decompose(
        self, token_id: int, removed: frozenset[int] | set[int]
    ) -> tuple[int, ...] | None:
        """Pieces of ``token_id`` using only tokens outside ``removed``; None if impossible."""
        stack = [token_id]
        out: list[int] = []
        while stack:
            t = stack.pop()
            if t not in removed:
                out.append(t)
                continue
            pair = self.merges.get(t)
            if pair is None:
                return None
            stack.append(pair[1])
            stack.append(pair[0])
        return tuple(out)


def inspect_base(tok: Any, name: str = "tokenizer") -> BaseInfo:
    """Classify the tokenizer and collect merges; unsupported kinds raise AdaptiVocabError."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model", {})
    mtype = model.get("type")
    if mtype != "BPE" or not model.get("merges"):
        raise AdaptiVocabError(
            f"{name} is a {mtype or 'unknown'} tokenizer without BPE merges; adaptivocab supports "
            "BPE tokenizers only (SentencePiece-style with byte fallback like Llama 2/Mistral, or "
            "byte-level like GPT-2/Llama 3/Qwen)"
        )
    byte_level = _contains_type(spec.get("pre_tokenizer"), "ByteLevel") or _contains_type(
        spec.get("decoder"), "ByteLevel"
    )
    if byte_level:
        kind = TokenizerKind.BYTE_LEVEL_BPE
    elif model.get("byte_fallback"):
        kind = TokenizerKind.SENTENCEPIECE_BPE
    else:
        raise AdaptiVocabError(
            f"{name} is a BPE tokenizer that is neither byte-level nor byte-fallback; such a "
            "tokenizer maps unknown characters to <unk>, so adaptivocab does not support it"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    size = len(tok)
    id_to_token = [""] * size
    for t, i in vocab.items():
        if i < size:
            id_to_token[i] = t
    protected: set[int] = set()
    for added in spec.get("added_tokens", []):
        protected.add(int(added["id"]))
        if added["id"] < size:
            id_to_token[added["id"]] = added["content"]
    protected.update(int(i) for i in getattr(tok, "all_special_ids", []))
    bl = _byte_level_decoder() if kind is TokenizerKind.BYTE_LEVEL_BPE else {}
    for i, t in enumerate(id_to_token):
        if not t or (
            kind is TokenizerKind.SENTENCEPIECE_BPE and (_BYTE_TOKEN.match(t) or len(t) == 1)
        ):
            protected.add(i)
        elif kind is TokenizerKind.BYTE_LEVEL_BPE:
            raw = bytes(bl.get(c, 0) for c in t)
            try:
                if len(raw.decode("utf-8")) <= 1:
                    protected.add(i)
            except UnicodeDecodeError:
                if len(t) == 1:
                    protected.add(i)
    merges: dict[int, tuple[int, int]] = {}
    for a, b in _merge_pairs(model["merges"]):
        ia, ib, ic = vocab.get(a), vocab.get(b), vocab.get(a + b)
        if ia is None or ib is None or ic is None or ic in merges:
            continue
        merges[ic] = (ia, ib)
    return BaseInfo(
        kind=kind,
        vocab_size=size,
        id_to_token=tuple(id_to_token),
        protected=frozenset(protected),
        merges=merges,
    )


def vocab_fingerprint(tok: Any) -> str:
    """A short hash of the id->token table, to catch a patch saved with a different base."""
    import hashlib

    vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    items = sorted((i, t) for t, i in vocab.items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
