"""CLI on bad input found by an audit: each is one clean error line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
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


@pytest.fixture()
def tiny_model(bytelevel_patch, tmp_path) -> Path:
    from tiny_models import tiny_llama_folder

    return tiny_llama_folder(tmp_path / "model", len(bytelevel_patch), layers=1)


def damaged_copy(src: Path, dst: Path, name: str, data: bytes) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / name).write_bytes(data)
    return dst


@pytest.mark.parametrize(
    ("name", "damage", "needle"),
    [
        ("model.safetensors", lambda b: b[:-100], "not a readable safetensors"),  # cut short
        ("model.safetensors", lambda b: b[:1000], "not a readable safetensors"),
        ("config.json", lambda b: b"\xff\xfe{", "config.json is corrupt"),  # UTF-16 BOM
        ("config.json", lambda b: b"[1, 2]", "config.json is corrupt"),
    ],
)
def test_damaged_model_folder_is_one_line(
    tiny_model, bytelevel_patch_dir, corpus_txt, tmp_path, name, damage, needle
) -> None:
    bad = damaged_copy(tiny_model, tmp_path / "bad", name, damage((tiny_model / name).read_bytes()))
    for args in (
        ("patch-model", "--out", str(tmp_path / "out")),
        ("finetune", "--corpus", str(corpus_txt), "--out", str(tmp_path / "out"), "--steps", "1"),
        ("eval", "--corpus", str(corpus_txt)),
    ):
        cmd, *rest = args
        res = run(cmd, "--model", str(bad), "--patch-tokenizer", str(bytelevel_patch_dir),
                  "--quiet", *rest)
        assert_clean_error(res, needle)
    assert not (tmp_path / "out").exists()


def run_model_commands(
    model: Path, patch: Path, corpus: Path, out: Path
) -> Iterator[subprocess.CompletedProcess[str]]:
    """patch-model, finetune (one step) and eval on ``model`` with ``patch``, in turn."""
    for cmd, *rest in (
        ("patch-model", "--out", str(out)),
        ("finetune", "--corpus", str(corpus), "--out", str(out), "--steps", "1"),
        ("eval", "--corpus", str(corpus)),
    ):
        yield run(cmd, "--model", str(model), "--patch-tokenizer", str(patch), "--quiet", *rest)


def test_pickle_weights_are_refused_by_every_model_command(
    tiny_model, bytelevel_patch_dir, corpus_txt, tmp_path
) -> None:
    # The message named patch-model whichever command met them, and did not say why the
    # pickle file beside it was passed over.
    pickled = damaged_copy(tiny_model, tmp_path / "pickled", "pytorch_model.bin", b"not read")
    (pickled / "model.safetensors").unlink()
    for res in run_model_commands(pickled, bytelevel_patch_dir, corpus_txt, tmp_path / "out"):
        assert_clean_error(res, "pickle weights (pytorch_model.bin) are never loaded")
        assert "patch-model reads" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("caf\u00e9 na\u00efve\n\n".encode("latin-1") * 50, "not UTF-8 text (byte 0xe9 at offset 3)"),
        (bytes(range(256)) * 400, "not UTF-8 text"),  # binary
        ("hello world\n\n".encode("utf-16-le") * 50, "NUL bytes"),  # valid UTF-8, yet not text
    ],
)
def test_corpus_that_is_not_utf8_text_is_refused(
    bytelevel_dir, bytelevel_patch_dir, tmp_path, data, needle
) -> None:
    import gzip

    # Bad bytes were replaced by U+FFFD in silence: a vocabulary and a measured reduction
    # from a Latin-1 export or a binary file.
    plain = tmp_path / "corpus.txt"
    plain.write_bytes(data)
    packed = tmp_path / "corpus.txt.gz"
    packed.write_bytes(gzip.compress(data))
    for corpus in (plain, packed):
        res = run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(corpus),
                  "--num-tokens", "20", "--out", str(tmp_path / "o"), "--quiet")
        assert_clean_error(res, needle)
        res = run("stats", "--patch-tokenizer", str(bytelevel_patch_dir), "--corpus", str(corpus),
                  "--quiet")
        assert_clean_error(res, needle)
    assert not (tmp_path / "o").exists()


def test_build_on_too_few_documents_says_its_stats_are_from_training_text(
    bytelevel_dir, tmp_path
) -> None:
    import json

    # One long paragraph: the hash split leaves one side empty, so the statistics the engine
    # sizes its cache from are measured on the very text the n-grams were chosen on; they
    # were labelled "held-out split".
    one = tmp_path / "one.txt"
    one.write_text(" ".join(d.replace("\n", " ") for d in synthetic_docs(400, seed=5)))
    out = tmp_path / "patch"
    res = run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(one),
              "--num-tokens", "20", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    stats = json.loads((out / "reduction_stats.json").read_text())
    assert stats["documents"] == 1 and stats["source"].startswith("training text")
    assert "warning:" in res.stderr and "adaptivocab stats" in res.stderr


def test_build_on_a_patch_folder_says_it_builds_on_the_base(
    bytelevel_dir, bytelevel_patch_dir, corpus_txt, tmp_path
) -> None:
    out, plain = tmp_path / "patch", tmp_path / "plain"
    res = run("build", "--tokenizer", str(bytelevel_patch_dir), "--corpus", str(corpus_txt),
              "--num-tokens", "20", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "is an AdaptiVocab patch folder" in res.stderr and "base tokenizer" in res.stderr
    # The same patch as built on the base folder itself.
    res = run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(corpus_txt),
              "--num-tokens", "20", "--out", str(plain), "--quiet")
    assert "patch folder" not in res.stderr
    assert (out / "patch.json").read_text() == (plain / "patch.json").read_text()


def test_build_with_a_held_out_split_says_so(bytelevel_dir, corpus_txt, tmp_path) -> None:
    import json

    out = tmp_path / "patch"
    res = run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(corpus_txt),
              "--num-tokens", "20", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "reduction_stats.json").read_text())["source"].startswith("held-out")
    assert "too few documents" not in res.stderr


@pytest.mark.parametrize("size", ["0", "-1", "1", "two"])
def test_max_ngram_below_two_is_a_usage_error(size, tmp_path) -> None:
    # Refused by the parser before anything loads (the tokenizer here does not exist);
    # 0 said "must be at least 1", and 1 passed the parser, to fail after the corpus was read.
    res = run("build", "--tokenizer", str(tmp_path / "none"), "--corpus", str(tmp_path / "c"),
              "--max-ngram", size, "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--max-ngram" in res.stderr and "tokenizer folder not found" not in res.stderr
    if size != "two":
        assert "at least 2" in res.stderr, res.stderr


def test_outputs_get_the_umask_mode_not_private_temp_modes(
    bytelevel_dir, corpus_txt, tmp_path
) -> None:
    import stat

    # The atomic writes went through mkdtemp / mkstemp, whose 0700 folder and 0600 file the
    # rename kept: a patch built by one user could not be served by another (a container).
    old = os.umask(0o022)
    try:
        out = tmp_path / "patch"
        res = run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(corpus_txt),
                  "--num-tokens", "20", "--out", str(out), "--quiet")
        assert res.returncode == 0, res.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o755
        stats_file = out / "reduction_stats.json"
        stats_file.unlink()
        res = run("stats", "--patch-tokenizer", str(out), "--corpus", str(corpus_txt),
                  "--write", "--quiet")
        assert res.returncode == 0, res.stderr
        assert stat.S_IMODE(stats_file.stat().st_mode) == 0o644
        stats_file.chmod(0o640)  # a rewrite keeps the mode the file has
        res = run("stats", "--patch-tokenizer", str(out), "--corpus", str(corpus_txt),
                  "--write", "--quiet")
        assert res.returncode == 0, res.stderr
        assert stat.S_IMODE(stats_file.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_tokenizer_folder_without_a_tokenizer_says_so(corpus_txt, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("build", "--tokenizer", str(empty), "--corpus", str(corpus_txt),
              "--num-tokens", "20", "--out", str(tmp_path / "o"), "--quiet")
    assert_clean_error(res, f"tokenizer folder {empty} holds no tokenizer (none of tokenizer.json")
    assert not (tmp_path / "o").exists()


def test_tokenizer_that_is_a_file_is_refused_at_once(bytelevel_dir, corpus_txt, tmp_path) -> None:
    # It was taken for a hub id: this absolute path failed as "Repo id must be in the form
    # ...", and a relative one ("tok/tokenizer.json") gave a minute of retries offline, then a
    # patch built on the bare tokenizer.json, without the folder's EOS token and chat template.
    res = run("build", "--tokenizer", str(bytelevel_dir / "tokenizer.json"),
              "--corpus", str(corpus_txt), "--num-tokens", "20", "--out", str(tmp_path / "o"),
              "--quiet")
    assert_clean_error(res, f"is a file; pass the folder that holds it ({bytelevel_dir})")
    assert not (tmp_path / "o").exists()


def test_a_hub_id_that_cannot_be_fetched_is_one_line_without_retries(
    corpus_txt, tmp_path
) -> None:
    import subprocess
    import sys

    from av_corpus import REPO

    # A hub that refuses connections, and an empty cache: transformers' own lookup retried
    # each file for most of a minute, printing every retry, before its error.
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_ENDPOINT="http://127.0.0.1:9",
               HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    res = subprocess.run(
        [sys.executable, "-m", "adaptivocab", "build", "--tokenizer", "owner/name", "--corpus",
         str(corpus_txt), "--out", str(tmp_path / "o"), "--quiet"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert_clean_error(res, "owner/name: it is not a local folder and could not be fetched")
    assert "Retry" not in res.stderr and not (tmp_path / "o").exists()


def test_a_hub_id_loads_from_its_snapshot(bytelevel_dir, monkeypatch) -> None:
    import huggingface_hub

    from adaptivocab.base import load_base_tokenizer

    asked = []

    def snapshot(repo_id: str, **kwargs: object) -> str:
        asked.append((repo_id, kwargs))
        return str(bytelevel_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    tok = load_base_tokenizer("owner/name")
    assert len(tok) == 700 and tok.eos_token == "<|endoftext|>"
    (repo_id, kwargs), = asked
    assert repo_id == "owner/name" and "*.safetensors" not in kwargs["allow_patterns"]


def test_a_patch_of_another_tokenizer_is_refused_by_the_model_commands(
    tiny_model, bytelevel_patch_dir, corpus_txt, tmp_path
) -> None:
    import json
    import shutil

    # The model folder's own tokenizer gives two tokens each other's ids: the same size, so
    # check_vocab let the patch through and every swapped row was built from the wrong rows.
    shutil.copy(bytelevel_patch_dir / "tokenizer.json", tiny_model / "tokenizer.json")
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tiny_model / "tokenizer.json").write_text(json.dumps(spec))
    for res in run_model_commands(tiny_model, bytelevel_patch_dir, corpus_txt, tmp_path / "out"):
        assert_clean_error(res, "built from a different tokenizer than")
    assert not (tmp_path / "out").exists()
    # Its own tokenizer: accepted.
    shutil.copy(bytelevel_patch_dir / "tokenizer.json", tiny_model / "tokenizer.json")
    res = run("patch-model", "--model", str(tiny_model), "--patch-tokenizer",
              str(bytelevel_patch_dir), "--quiet", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr


def test_eval_on_too_few_documents_says_it_is_not_held_out(
    tiny_model, bytelevel_patch_dir, corpus_txt, tmp_path
) -> None:
    # One paragraph: the hash split has no held-out side, so the training text was scored
    # and reported as held-out bits per byte, without a word (build says so; eval did not).
    one = tmp_path / "one.txt"
    one.write_text(" ".join(d.replace("\n", " ") for d in synthetic_docs(40, seed=5)))
    common = ("eval", "--model", str(tiny_model), "--patch-tokenizer", str(bytelevel_patch_dir),
              "--quiet", "--seq-len", "64")
    res = run(*common, "--corpus", str(one))
    assert res.returncode == 0, res.stderr
    assert "warning:" in res.stderr and "held-out split" in res.stderr
    assert "bits/byte" in res.stdout
    for args in (("--corpus", str(one), "--split", "all"), ("--corpus", str(corpus_txt))):
        res = run(*common, *args)
        assert res.returncode == 0 and "warning" not in res.stderr, res.stderr


def test_an_out_inside_a_file_says_the_parent_is_a_file(tmp_path) -> None:
    # It said "parent folder of --out does not exist", while the parent was there, a file.
    from adaptivocab.errors import AdaptiVocabError
    from adaptivocab.fsutil import check_output_dir

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(AdaptiVocabError, match=r"--out is inside .*afile, which is a file"):
        check_output_dir(afile / "sub")
    with pytest.raises(AdaptiVocabError, match="does not exist"):
        check_output_dir(tmp_path / "missing" / "sub")
