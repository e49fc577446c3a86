"""CLI on bad input found by an audit: each is one clean error line, never a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from av_corpus import synthetic_docs
from test_av_cli import assert_clean_error, run


def make_unwritable(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``folder`` refuses new files: by its mode, or (as root, whom modes do not stop) by
    making tempfile refuse it, as a read-only mount would."""
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return
    real_mkdtemp, real_mkstemp = tempfile.mkdtemp, tempfile.mkstemp

    def refuse(real):
        def wrapped(*args, **kwargs):
            where = kwargs.get("dir", args[2] if len(args) > 2 else None)
            if where is not None and Path(where).resolve() == folder.resolve():
                raise PermissionError(13, "Permission denied", str(folder))
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(tempfile, "mkdtemp", refuse(real_mkdtemp))
    monkeypatch.setattr(tempfile, "mkstemp", refuse(real_mkstemp))


@pytest.fixture()
def corpus_txt(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(synthetic_docs(600, seed=3)), encoding="utf-8")
    return path


def test_unwritable_output_folder_is_one_line(
    bytelevel_dir, corpus_txt, tmp_path, monkeypatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    make_unwritable(locked, monkeypatch)
    try:
        res = run(
            "build", "--tokenizer", str(bytelevel_dir), "--corpus", str(corpus_txt),
            "--num-tokens", "20", "--out", str(locked / "patch"), "--quiet",
        )
        assert_clean_error(res, "cannot write in")
        # Refused before the work: nothing was measured or printed.
        assert res.stdout == ""
    finally:
        locked.chmod(0o755)


def test_stats_write_into_unwritable_folder_is_one_line(
    bytelevel_patch_dir, corpus_txt, tmp_path, monkeypatch
) -> None:
    import shutil

    folder = tmp_path / "patch"
    shutil.copytree(bytelevel_patch_dir, folder)
    before = (folder / "reduction_stats.json").read_bytes() if (
        folder / "reduction_stats.json").exists() else None
    make_unwritable(folder, monkeypatch)
    try:
        res = run("stats", "--patch-tokenizer", str(folder), "--corpus", str(corpus_txt),
                  "--write", "--quiet")
        assert_clean_error(res, "cannot write in")
        assert res.stdout == ""
    finally:
        folder.chmod(0o755)
    after = (folder / "reduction_stats.json").read_bytes() if (
        folder / "reduction_stats.json").exists() else None
    assert after == before
