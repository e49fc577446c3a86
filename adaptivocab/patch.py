"""The vocabulary patch as data, and its JSON file (patch.json)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptivocab.errors import AdaptiVocabError

PATCH_FILE = "patch.json"
STATS_FILE = "reduction_stats.json"
FORMAT = "adaptivocab-patch"
VERSION = 1


@dataclass(frozen=True)
class VocabPatch:
    """Which base ids were removed and which n-grams now live at those ids.

    ``removed`` maps each removed base id to its pieces among surviving ids
    (used when the base tokenizer still emits it); ``ngrams`` maps each
    reused id to the surviving base ids it stands for. Both key sets are equal.
    """

    base_vocab_size: int
    kind: str
    removed: dict[int, tuple[int, ...]]
    ngrams: dict[int, tuple[int, ...]]
    base_fingerprint: str = ""
    build: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if set(self.removed) != set(self.ngrams):
            raise AdaptiVocabError(
                "patch.json is inconsistent: removed ids and n-gram ids differ; rebuild the patch"
            )
        gone = set(self.removed)
        for table, what in ((self.removed, "removed-token pieces"), (self.ngrams, "n-gram pieces")):
            for tid, pieces in table.items():
                if not 0 <= tid < self.base_vocab_size:
                    raise AdaptiVocabError(
                        f"patch.json: id {tid} outside the base vocab (size {self.base_vocab_size})"
                    )
                if not pieces or any(
                    p in gone or not 0 <= p < self.base_vocab_size for p in pieces
                ):
                    raise AdaptiVocabError(
                        f"patch.json: {what} of id {tid} use removed or invalid ids; rebuild the "
                        "patch"
                    )
        seen = set()
        for pieces in self.ngrams.values():
            if len(pieces) < 2 or pieces in seen:
                raise AdaptiVocabError(
                    "patch.json: n-grams must be distinct and at least 2 tokens long; rebuild the "
                    "patch"
                )
            seen.add(pieces)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "base_vocab_size": self.base_vocab_size,
            "tokenizer_kind": self.kind,
            "base_fingerprint": self.base_fingerprint,
            "build": self.build,
            "swaps": [
                {
                    "id": tid,
                    "removed_pieces": list(self.removed[tid]),
                    "ngram": list(self.ngrams[tid]),
                }
                for tid in sorted(self.ngrams)
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> VocabPatch:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise AdaptiVocabError(
                f"{PATCH_FILE} is not an adaptivocab patch (missing format tag); rebuild it with "
                "`adaptivocab build`"
            )
        if data.get("version") != VERSION:
            raise AdaptiVocabError(
                f"{PATCH_FILE} has version {data.get('version')}, this adaptivocab reads version "
                f"{VERSION}"
            )
        try:
            removed = {
                int(s["id"]): tuple(int(x) for x in s["removed_pieces"]) for s in data["swaps"]
            }
            ngrams = {int(s["id"]): tuple(int(x) for x in s["ngram"]) for s in data["swaps"]}
            patch = cls(
                base_vocab_size=int(data["base_vocab_size"]),
                kind=str(data["tokenizer_kind"]),
                removed=removed,
                ngrams=ngrams,
                base_fingerprint=str(data.get("base_fingerprint", "")),
                build=dict(data.get("build") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AdaptiVocabError(
                f"{PATCH_FILE} is malformed ({type(exc).__name__}: {exc}); rebuild the patch"
            ) from exc
        patch.validate()
        return patch

    def save(self, folder: Path) -> None:
        (folder / PATCH_FILE).write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> VocabPatch:
        path = folder / PATCH_FILE
        if not path.is_file():
            raise AdaptiVocabError(
                f"{folder} is not a patch tokenizer folder (no {PATCH_FILE}); build one with "
                "`python -m adaptivocab build`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdaptiVocabError(
                f"{path} is corrupt (not valid JSON: {exc}); rebuild the patch"
            ) from exc
        return cls.from_json(data)


def load_stats(folder: Path, longest_ngram: int = 1) -> dict[str, Any] | None:
    """The folder's reduction statistics (None when it has none), refused when the ratio
    the KV cache is sized from is not one this patch could have measured.

    ``longest_ngram``: base tokens in the patch's longest n-gram; one patched token stands
    for at most that many, so no text shrinks below ``1 / longest_ngram``."""
    path = folder / STATS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaptiVocabError(
            f"{path} is corrupt (not valid JSON); rerun `python -m adaptivocab stats --write`"
        ) from exc
    if not isinstance(data, dict):
        raise AdaptiVocabError(
            f"{path} is not a JSON object; rerun `python -m adaptivocab stats --write`"
        )
    ratio = data.get("ratio")
    if "ratio" in data and (
        isinstance(ratio, bool)
        or not isinstance(ratio, (int, float))
        or not math.isfinite(ratio)
        or ratio <= 0
    ):
        # The KV cache is sized from it: a ratio read as "none" would size it for 1.0.
        raise AdaptiVocabError(
            f"{path} has ratio {ratio!r}, not a positive number; "
            "rerun `python -m adaptivocab stats --write`"
        )
    if ratio is not None:
        _check_ratio_is_measured(path, ratio, data, longest_ngram)
    return data


def _check_ratio_is_measured(
    path: Path, ratio: float, data: dict[str, Any], longest_ngram: int
) -> None:
    """A ratio below what the file's own token counts give, or below what the patch can
    reach, would size the KV cache for more requests than the pool holds (an edited or
    copied file): refuse it rather than overcommit."""
    floor = 1 / max(1, longest_ngram)
    if ratio < floor * (1 - 1e-9):
        raise AdaptiVocabError(
            f"{path} has ratio {ratio!r}, below {floor:.4f}: this patch's longest n-gram is "
            f"{longest_ngram} base tokens, so it cannot shrink text further; "
            "rerun `python -m adaptivocab stats --write`"
        )
    base, patched = data.get("base_tokens"), data.get("patched_tokens")
    if (
        isinstance(base, int)
        and isinstance(patched, int)
        and not isinstance(base, bool)
        and not isinstance(patched, bool)
        and base > 0
    ):
        measured = patched / base
        if ratio < measured and not math.isclose(ratio, measured, rel_tol=1e-9):
            raise AdaptiVocabError(
                f"{path} has ratio {ratio!r}, a larger reduction than its token counts "
                f"measured ({patched} / {base} = {measured:.4f}); "
                "rerun `python -m adaptivocab stats --write`"
            )
