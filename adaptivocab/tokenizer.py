"""PatchTokenizer: a base Hugging Face tokenizer plus an n-gram vocabulary patch."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from adaptivocab.base import inspect_base, load_base_tokenizer, vocab_fingerprint
from adaptivocab.errors import AdaptiVocabError
from adaptivocab.matcher import NgramMatcher
from adaptivocab.patch import STATS_FILE, VocabPatch, load_stats

# Attributes served unchanged by the base tokenizer: ids and specials are
# identical after the patch, by construction.
_DELEGATED = frozenset(
    {
        "bos_token",
        "eos_token",
        "unk_token",
        "pad_token",
        "sep_token",
        "cls_token",
        "mask_token",
        "bos_token_id",
        "eos_token_id",
        "unk_token_id",
        "pad_token_id",
        "sep_token_id",
        "cls_token_id",
        "mask_token_id",
        "all_special_ids",
        "all_special_tokens",
        "special_tokens_map",
        "additional_special_tokens",
        "additional_special_tokens_ids",
        "chat_template",
        "model_max_length",
        "padding_side",
        "truncation_side",
        "name_or_path",
        "added_tokens_decoder",
        "added_tokens_encoder",
        "clean_up_tokenization_spaces",
        "model_input_names",
    }
)

# transformers' VERY_LARGE_INTEGER: a model_max_length at or past it means "none".
_NO_MODEL_MAX = int(1e30)

# apply_chat_template's options for encoding the rendered text.
_CHAT_ENCODING_KWARGS = ("padding", "truncation", "max_length", "return_tensors")


def _as_id_list(ids: Any) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


class PatchTokenizer:
    """Encodes with the base tokenizer, then applies the patch; decodes through the base pieces.

    Every surviving id, every special token and the vocab size equal the base
    tokenizer's; the ids in ``removed_ids`` now mean the n-grams in ``ngram_pieces``.
    """

    is_fast = True

    def __init__(
        self, base_tokenizer: Any, patch: VocabPatch, reduction_stats: dict[str, Any] | None = None
    ) -> None:
        info = inspect_base(
            base_tokenizer, str(getattr(base_tokenizer, "name_or_path", "base tokenizer"))
        )
        if info.kind.value != patch.kind:
            raise AdaptiVocabError(
                f"patch was built for a {patch.kind} tokenizer but the base tokenizer is "
                f"{info.kind.value}"
            )
        if len(base_tokenizer) != patch.base_vocab_size:
            raise AdaptiVocabError(
                f"patch was built for a base vocab of {patch.base_vocab_size} tokens but the base "
                f"tokenizer has {len(base_tokenizer)}; use the base tokenizer the patch was "
                "built from"
            )
        if patch.base_fingerprint and patch.base_fingerprint != vocab_fingerprint(base_tokenizer):
            raise AdaptiVocabError(
                "patch was built from a different base tokenizer (vocab fingerprint differs); "
                "rebuild it"
            )
        protected_hit = set(patch.ngrams) & info.protected
        if protected_hit:
            raise AdaptiVocabError(
                "patch swaps protected (special/byte/single-character) ids "
                f"{sorted(protected_hit)[:5]}; rebuild it"
            )
        from tokenizers import Tokenizer

        self.base_tokenizer = base_tokenizer
        self.patch = patch
        self.kind = info.kind
        self.reduction_stats = reduction_stats
        # A private copy of the Rust tokenizer: padding/truncation state set on
        # the base object by other callers must not leak into our encodes.
        self._backend = Tokenizer.from_str(base_tokenizer.backend_tokenizer.to_str())
        self._backend.no_padding()
        self._backend.no_truncation()
        self._matcher = NgramMatcher(len(base_tokenizer), patch.removed, patch.ngrams)
        self._ngrams = patch.ngrams
        self._base_id_to_token = info.id_to_token
        self._ngram_token = {
            tid: "".join(info.id_to_token[p] for p in pieces)
            for tid, pieces in patch.ngrams.items()
        }
        self._token_to_ngram: dict[str, int] = {}
        for tid in sorted(self._ngram_token):
            self._token_to_ngram.setdefault(self._ngram_token[tid], tid)

    # -- loading and saving ---------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], with_stats: bool = True
    ) -> PatchTokenizer:
        """Load a folder written by ``save_pretrained`` or ``adaptivocab build``.
        ``with_stats=False`` leaves its reduction_stats.json unread (``adaptivocab stats``
        measures anew, and must be able to replace a corrupt file)."""
        folder = Path(path)
        if not folder.is_dir():
            raise AdaptiVocabError(f"patch tokenizer folder not found: {folder}")
        patch = VocabPatch.load(folder)
        longest = max((len(p) for p in patch.ngrams.values()), default=1)
        stats = load_stats(folder, longest) if with_stats else None
        base = load_base_tokenizer(folder)
        return cls(base, patch, stats)

    def save_pretrained(self, path: str | os.PathLike[str]) -> tuple[str, ...]:
        """Write the base tokenizer files, patch.json and (if known) reduction_stats.json."""
        import json

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        files = list(self.base_tokenizer.save_pretrained(str(folder)))
        self.patch.save(folder)
        files.append(str(folder / "patch.json"))
        if self.reduction_stats is not None:
            (folder / STATS_FILE).write_text(
                json.dumps(self.reduction_stats, indent=1), encoding="utf-8"
            )
            files.append(str(folder / STATS_FILE))
        return tuple(files)

    # -- facts ----------------------------------------------------------------
    @property
    def ngram_pieces(self) -> dict[int, tuple[int, ...]]:
        """New id -> the surviving base ids it stands for."""
        return dict(self._ngrams)

    @property
    def removed_ids(self) -> frozenset[int]:
        """Base ids whose old meaning was removed (they now hold n-grams)."""
        return frozenset(self.patch.removed)

    @property
    def reduction_ratio(self) -> float | None:
        """Patched tokens / base tokens on the held-out split (None without stats)."""
        if not self.reduction_stats:
            return None
        ratio = self.reduction_stats.get("ratio")
        return float(ratio) if isinstance(ratio, (int, float)) and ratio > 0 else None

    @property
    def vocab_size(self) -> int:
        return int(self.base_tokenizer.vocab_size)

    def __len__(self) -> int:
        return len(self.base_tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name in _DELEGATED:
            return getattr(self.__dict__["base_tokenizer"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # Hugging Face idioms (``tok.pad_token = tok.eos_token``, ``tok.padding_side =
        # "left"``, ``tok.chat_template = ...``) must reach the base tokenizer, which pads and
        # renders templates: set here, they were shadowed and silently had no effect.
        if name in _DELEGATED and "base_tokenizer" in self.__dict__:
            setattr(self.base_tokenizer, name, value)
        else:
            super().__setattr__(name, value)

    def __repr__(self) -> str:
        return (
            f"PatchTokenizer(base={getattr(self.base_tokenizer, 'name_or_path', '?')!r}, "
            f"kind={self.kind.value}, swapped={len(self._ngrams)}, "
            f"reduction_ratio={self.reduction_ratio})"
        )

    # -- encoding -------------------------------------------------------------
    def base_encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = True
    ) -> list[list[int]]:
        encs = self._backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encs]

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> Any:
        """Patched ids of ``text``, cut where Hugging Face cuts (``_lengths``: ``max_length``
        unless ``truncation=False``); with ``return_tensors`` ("pt", "np") a batch of one,
        as Hugging Face returns it."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = self._matcher.apply(
            self._backend.encode(text, add_special_tokens=add_special_tokens).ids
        )
        cut, _ = self._lengths(False, kwargs.get("truncation"), kwargs.get("max_length"))
        if cut is not None:
            ids = ids[:cut]
        tensors = kwargs.get("return_tensors")
        if tensors is None:
            return ids
        from transformers import BatchEncoding

        return BatchEncoding({"input_ids": [ids]}, tensor_type=tensors)["input_ids"]

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = True
    ) -> list[list[int]]:
        """Patched ids of many texts (vectorised; much faster than a loop over ``encode``)."""
        return self._matcher.apply_batch(self.base_encode_batch(texts, add_special_tokens))

    def _lengths(
        self, padding: bool | str, truncation: bool | str | None, max_length: int | None
    ) -> tuple[int | None, int | None]:
        """Where Hugging Face cuts and pads: ``max_length`` without padding cuts even with
        ``truncation`` unset (with a warning there); ``padding="max_length"`` or
        ``truncation=True`` without it use the model's ``model_max_length``, and no padding
        or cut where the model has none. Returns (cut, width), None for neither."""
        limit = max_length
        if limit is None:
            model_max = getattr(self.base_tokenizer, "model_max_length", None)
            if isinstance(model_max, int) and 0 < model_max < _NO_MODEL_MAX:
                limit = model_max
        if truncation is None:  # unset: only a bare max_length cuts
            cuts = max_length is not None and padding is False
        else:
            cuts = truncation not in (False, "do_not_truncate")
        cut = limit if cuts else None
        width = limit if padding == "max_length" else None
        return cut, width

    def __call__(
        self,
        text: str | Sequence[str],
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        **kwargs: Any,
    ) -> Any:
        """HF-style call: a BatchEncoding with ``input_ids`` and ``attention_mask``; cuts
        and pads as Hugging Face does (``_lengths``)."""
        from transformers import BatchEncoding

        single = isinstance(text, str)
        texts = [text] if isinstance(text, str) else list(text)
        seqs = self.encode_batch(texts, add_special_tokens)
        cut, width = self._lengths(padding, truncation, max_length)
        if cut is not None:
            seqs = [s[:cut] for s in seqs]
        masks = [[1] * len(s) for s in seqs]
        if padding == "max_length" and width is None:
            padding = False  # the model has no length to pad to (Hugging Face: no padding)
        if padding and padding != "do_not_pad":
            if width is None:
                width = max((len(s) for s in seqs), default=0)
            pad_id = self.base_tokenizer.pad_token_id
            if pad_id is None:
                pad_id = (
                    self.base_tokenizer.eos_token_id
                    if self.base_tokenizer.eos_token_id is not None
                    else 0
                )
            left = getattr(self.base_tokenizer, "padding_side", "right") == "left"
            for i, s in enumerate(seqs):
                extra = width - len(s)
                if extra > 0:
                    seqs[i] = [pad_id] * extra + s if left else s + [pad_id] * extra
                    masks[i] = [0] * extra + masks[i] if left else masks[i] + [0] * extra
        data: dict[str, Any] = {"input_ids": seqs[0] if single and return_tensors is None else seqs}
        if return_attention_mask:
            data["attention_mask"] = masks[0] if single and return_tensors is None else masks
        return BatchEncoding(data, tensor_type=return_tensors)

    # -- decoding -------------------------------------------------------------
    def to_base_ids(self, ids: Any) -> list[int]:
        """Replace every n-gram id by its base pieces (the ids the base tokenizer would decode)."""
        ngrams = self._ngrams
        return [p for t in _as_id_list(ids) for p in ngrams.get(t, (t,))]

    def decode(self, ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        """Text of ``ids``; decoding an n-gram id equals decoding its base pieces."""
        return self.base_tokenizer.decode(
            self.to_base_ids(ids), skip_special_tokens=skip_special_tokens, **kwargs
        )

    def batch_decode(
        self, sequences: Iterable[Any], skip_special_tokens: bool = False, **kwargs: Any
    ) -> list[str]:
        return [
            self.decode(s, skip_special_tokens=skip_special_tokens, **kwargs) for s in sequences
        ]

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> Any:
        """Token strings; an n-gram's string is its pieces' strings joined."""
        single = isinstance(ids, int)
        special = set(self.base_tokenizer.all_special_ids) if skip_special_tokens else set()
        out = [
            self._ngram_token.get(i) or self._base_id_to_token[i]
            for i in _as_id_list(ids)
            if i not in special
        ]
        return out[0] if single and out else out

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        """Ids of token strings; a removed base token's string maps to unk (None without unk)."""
        single = isinstance(tokens, str)
        unk = self.base_tokenizer.unk_token_id
        removed = self.patch.removed
        out = []
        for tok in [tokens] if isinstance(tokens, str) else tokens:
            tid = self._token_to_ngram.get(tok)
            if tid is None:
                base_id = self._backend.token_to_id(tok)
                tid = unk if base_id is None or base_id in removed else base_id
            out.append(tid)
        return out[0] if single else out

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        ids = self.convert_tokens_to_ids(list(tokens))
        return self.decode([i for i in ids if i is not None])

    def get_vocab(self) -> dict[str, int]:
        vocab = {
            t: i for t, i in self.base_tokenizer.get_vocab().items() if i not in self.patch.removed
        }
        for tok, tid in self._token_to_ngram.items():
            vocab.setdefault(tok, tid)
        return vocab

    # -- chat -----------------------------------------------------------------
    def apply_chat_template(
        self,
        conversation: Any,
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Render with the base tokenizer's template, then encode the text with the patch.

        The rendered text already holds the template's special tokens, so it is encoded
        without adding more (as Hugging Face does). Tokenized, it returns what the base
        tokenizer's would: ids, or with ``return_dict`` a BatchEncoding, whose default is
        the base's (False before transformers 5, True since); ``padding``, ``truncation``,
        ``max_length`` and ``return_tensors`` act as in ``__call__``.
        """
        return_dict = kwargs.pop("return_dict", _chat_returns_dict(self.base_tokenizer))
        # The base call only renders text, and would drop these.
        # Hugging Face's apply_chat_template does not cut unless told (truncation=False).
        encoding: dict[str, Any] = {"truncation": False}
        encoding.update({k: kwargs.pop(k) for k in _CHAT_ENCODING_KWARGS if k in kwargs})
        encoding.update(kwargs.pop("tokenizer_kwargs", None) or {})
        if kwargs.get("return_assistant_tokens_mask"):
            raise ValueError(
                "PatchTokenizer.apply_chat_template cannot return an assistant tokens mask"
            )
        rendered = self.base_tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
        if not tokenize:
            return rendered
        out = self(rendered, add_special_tokens=False, **encoding)
        return out if return_dict else out["input_ids"]


def _chat_returns_dict(base_tokenizer: Any) -> bool:
    """The base tokenizer's default for ``apply_chat_template(return_dict=...)``."""
    import inspect

    param = inspect.signature(base_tokenizer.apply_chat_template).parameters.get("return_dict")
    return param is not None and param.default is True
