"""Reading corpora: plain or gzip text, documents = blocks separated by blank lines."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptivocab.errors import AdaptiVocabError

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
HELD_IN_BUCKETS = 10  # one bucket of ten is kept aside for statistics


def read_text(path: str | os.PathLike[str]) -> str:
    """Whole file as UTF-8 text; gzip is detected by its magic bytes, not the name.

    A file that is not UTF-8 text (bad bytes, or NULs) is an AdaptiVocabError.
    """
    p = Path(path)
    if p.is_dir():
        # "not found" misled about a folder that is there; --corpus takes files.
        raise AdaptiVocabError(f"corpus {p} is a folder; pass the text files in it")
    if not p.is_file():
        raise AdaptiVocabError(f"corpus file not found: {p}")
    try:
        with p.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if gz:
            with gzip.open(p, "rb") as gzf:
                raw = gzf.read()
        else:
            raw = p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise AdaptiVocabError(f"cannot read corpus {p}: {exc}") from exc
    # Refused, not repaired: replacing bad bytes by U+FFFD built a vocabulary (and measured
    # a reduction) from a binary file or a Latin-1 export without a word of warning.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdaptiVocabError(
            f"corpus {p} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "if it is text in another encoding, convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from exc
    nul = text.find("\0")
    if nul >= 0:  # valid UTF-8, but text has no NULs: UTF-16 without a BOM, or binary data
        raise AdaptiVocabError(
            f"corpus {p} holds NUL bytes (first at character {nul}): binary data or UTF-16 text, "
            "not UTF-8 text"
        )
    return text


def split_documents(text: str) -> list[str]:
    """Documents are paragraphs: text between blank lines (whitespace-only blocks dropped).

    The corpora here are concatenated reST files without file markers, so a
    paragraph is the smallest unit that is still self-contained text.
    """
    return [block.strip("\n") for block in _BLANK_LINE.split(text) if block.strip()]


def is_held_out(doc: str) -> bool:
    """Deterministic 10% split by content hash (equal paragraphs land on the same side)."""
    digest = hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HELD_IN_BUCKETS == 0


@dataclass(frozen=True)
class Corpus:
    train: list[str]  # used to count n-grams
    held_out: list[str]  # kept aside for reduction statistics
    # True when the hash split left one side empty and both are the same text: statistics
    # measured on held_out are then measured on the training text, and optimistic.
    held_out_is_train: bool = False

    @property
    def num_chars(self) -> int:
        return sum(len(d) for d in self.train) + sum(len(d) for d in self.held_out)


def load_documents(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Every document of every file, in order; an empty result is an error."""
    if not paths:
        raise AdaptiVocabError("no corpus files given; pass --corpus FILE [FILE ...]")
    docs: list[str] = []
    for path in paths:
        docs.extend(split_documents(read_text(path)))
    if not docs:
        raise AdaptiVocabError(
            "the corpus is empty (no non-blank text); pass text files with domain documents"
        )
    return docs


def load_corpus(paths: Sequence[str | os.PathLike[str]]) -> Corpus:
    docs = load_documents(paths)
    train: list[str] = []
    held: list[str] = []
    for d in docs:
        (held if is_held_out(d) else train).append(d)
    if not held:
        # Too few paragraphs for a hash split: statistics fall back to the training text.
        held = list(train)
    if not train:
        # Every document hashed into the held-out bucket (one big paragraph has a 1 in 10
        # chance): counting and fine-tuning fall back to that text rather than to nothing.
        train = list(held)
    return Corpus(train=train, held_out=held, held_out_is_train=train == held)
