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
    if parent.exists() and not parent.is_dir():
        raise AdaptiVocabError(f"--out is inside {parent}, which is a file, not a folder")
    if not parent.is_dir():
        raise AdaptiVocabError(f"parent folder of --out does not exist: {parent}")
    check_writable(parent, "choose another --out")
    return path


def check_writable(folder: str | os.PathLike[str], hint: str) -> None:
    """Fail early if nothing can be created in ``folder``; ``hint`` says what to do instead.

    A real write, not os.access: root passes os.access everywhere, yet a read-only mount
    still refuses it, and the output is only written after all the work.
    """
    try:
        tempfile.TemporaryDirectory(prefix=".adaptivocab-probe-", dir=folder).cleanup()
    except OSError as exc:
        raise AdaptiVocabError(f"cannot write in {folder} ({exc.strerror or exc}); {hint}") from exc


def _umask() -> int:
    """The process's umask (read by setting it, the only portable way, and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace the file ``path`` with ``text`` in one rename (a reader never sees half of it)."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        try:
            # mkstemp makes the file 0600: the replaced file's mode, else what open() would
            # give, so an engine run as another user can still read it.
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise AdaptiVocabError(f"cannot write {target}: {exc}") from exc


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` only on success.

    The temporary folder lives in the same parent so the final rename is a
    single filesystem operation, never a copy.
    """
    path = check_output_dir(out, overwrite)
    parent = path.resolve().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    except OSError as exc:  # the folder became unwritable since check_output_dir
        raise AdaptiVocabError(f"cannot write in {parent} ({exc.strerror or exc})") from exc
    try:
        try:
            # mkdtemp makes the folder 0700, which the rename would keep: give it the mode
            # mkdir would, so the output can be served by another user (a container, a service).
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except OSError as exc:
            # A full disk or a vanished folder while writing: one line, not a traceback.
            raise AdaptiVocabError(f"writing {path} failed: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
