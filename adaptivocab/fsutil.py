"""Atomic output folders: a failed command never leaves a half-written folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adaptivocab.errors import AdaptiVocabError


def check_output_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early (before hours of work) if ``out`` cannot be written."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise AdaptiVocabError(
            f"output path {path} exists and is not a folder; choose another --out"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise AdaptiVocabError(
            f"output folder {path} exists and is not empty; choose another --out or pass "
            "--overwrite"
        )
    parent = path.resolve().parent
    if not parent.is_dir():
        raise AdaptiVocabError(f"parent folder of --out does not exist: {parent}")
    return path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` only on success.

    The temporary folder lives in the same parent so the final rename is a
    single filesystem operation, never a copy.
    """
    path = check_output_dir(out, overwrite)
    parent = path.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
