"""CLI: help lists every command; bad input gives one clean line, exit 2, nothing written."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from av_corpus import REPO, synthetic_docs
from entry_points import call


def run(*args: str) -> subprocess.CompletedProcess:
    """`python -m adaptivocab ARGS` through its entry point in this process;
    test_help_lists_subcommands runs the module itself once."""
    from adaptivocab.cli import main

    return call(main, "adaptivocab", args)


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "adaptivocab", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def assert_clean_error(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert needle in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    # Progress bars may precede it; the error itself is one final line.
    assert "error:" in lines[-1] and sum("error" in ln for ln in lines) == 1, res.stderr


def test_no_command_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    """As bare `sarathi` does: the help, exit 0 (in this process: no torch import to wait for
    in a subprocess)."""
    from adaptivocab.cli import main

    assert main([]) == 0
    assert "usage:" in capsys.readouterr().out


def test_help_lists_subcommands() -> None:
    res = run_module("--help")
    assert res.returncode == 0
    for cmd in ("build", "stats", "patch-model"):
        assert cmd in res.stdout
    for cmd in ("build", "stats", "patch-model"):
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and "--out" in sub.stdout or "--corpus" in sub.stdout


@pytest.fixture()
def corpus_gz(tmp_path) -> Path:
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n\n".join(synthetic_docs(1200, seed=7)))
    return path


def test_build_stats_end_to_end(bytelevel_dir, corpus_gz, tmp_path) -> None:
    out = tmp_path / "patch"
    res = run(
        "build",
        "--tokenizer",
        str(bytelevel_dir),
        "--corpus",
        str(corpus_gz),
        "--num-tokens",
        "60",
        "--out",
        str(out),
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    stats = json.loads((out / "reduction_stats.json").read_text())
    assert 0 < stats["ratio"] < 1 and stats["base_tokens"] > stats["patched_tokens"]
    assert set(stats["per_document"]) >= {"mean", "std", "p10", "p50", "p90"}
    from adaptivocab import PatchTokenizer

    assert PatchTokenizer.from_pretrained(out).reduction_ratio == pytest.approx(stats["ratio"])
    res = run(
        "stats", "--patch-tokenizer", str(out), "--corpus", str(corpus_gz), "--write", "--quiet"
    )
    assert res.returncode == 0 and "ratio" in res.stdout
    assert f"wrote {out / 'reduction_stats.json'}" in res.stdout
    res = run("stats", "--patch-tokenizer", str(out), "--corpus", str(corpus_gz), "--write",
              "--json", "--quiet")
    assert json.loads(res.stdout)["ratio"] > 0 and "wrote" in res.stderr
    # stats measures every document, build only the held-out tenth.
    assert (
        json.loads((out / "reduction_stats.json").read_text())["documents"] > 5 * stats["documents"]
    )
    again = run(
        "build",
        "--tokenizer",
        str(bytelevel_dir),
        "--corpus",
        str(corpus_gz),
        "--num-tokens",
        "60",
        "--out",
        str(out),
    )
    assert_clean_error(again, "not empty")


def test_empty_and_tiny_corpus(bytelevel_dir, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    out = tmp_path / "o"
    assert_clean_error(
        run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(empty), "--out", str(out)),
        "empty",
    )
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\n\nagain")
    assert_clean_error(
        run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(tiny), "--out", str(out)),
        "too small",
    )
    assert_clean_error(
        run(
            "build",
            "--tokenizer",
            str(bytelevel_dir),
            "--corpus",
            str(tmp_path / "nope.txt"),
            "--out",
            str(out),
        ),
        "not found",
    )
    # A folder given as --corpus is there: "not found" misled.
    folder = tmp_path / "texts"
    folder.mkdir()
    assert_clean_error(
        run("build", "--tokenizer", str(bytelevel_dir), "--corpus", str(folder), "--out", str(out)),
        "is a folder",
    )
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o.tmp")]


def test_tokenizer_without_merges(tmp_path, corpus_gz) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    uni = Tokenizer(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.train_from_iterator(
        synthetic_docs(200),
        trainers.UnigramTrainer(
            vocab_size=200, show_progress=False, unk_token="<unk>", special_tokens=["<unk>"]
        ),
    )
    PreTrainedTokenizerFast(tokenizer_object=uni, unk_token="<unk>").save_pretrained(
        str(tmp_path / "uni")
    )
    res = run(
        "build",
        "--tokenizer",
        str(tmp_path / "uni"),
        "--corpus",
        str(corpus_gz),
        "--out",
        str(tmp_path / "o"),
    )
    assert_clean_error(res, "Unigram")
    assert not (tmp_path / "o").exists()


def test_stats_write_replaces_a_corrupt_stats_file(
    bytelevel_patch_dir, corpus_gz, tmp_path
) -> None:
    """Every refusal of a bad reduction_stats.json says to rerun `stats --write`: that
    rerun must not refuse the same file."""
    import shutil

    from adaptivocab import PatchTokenizer

    folder = tmp_path / "p"
    shutil.copytree(bytelevel_patch_dir, folder)
    for bad in ("{not json", json.dumps({"ratio": -1})):
        (folder / "reduction_stats.json").write_text(bad)
        res = run("stats", "--patch-tokenizer", str(folder), "--corpus", str(corpus_gz),
                  "--write", "--quiet")
        assert res.returncode == 0, res.stderr
        assert 0 < PatchTokenizer.from_pretrained(folder).reduction_ratio < 1


def test_corrupt_and_mismatched_patch_folder(
    bytelevel_patch_dir, mistral_base, corpus_gz, tmp_path
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bytelevel_patch_dir, bad)
    (bad / "patch.json").write_text("{not json")
    assert_clean_error(
        run("stats", "--patch-tokenizer", str(bad), "--corpus", str(corpus_gz)), "corrupt"
    )
    assert_clean_error(
        run("stats", "--patch-tokenizer", str(tmp_path / "missing"), "--corpus", str(corpus_gz)),
        "not found",
    )
    # A patch.json from the byte-level build next to the Mistral tokenizer files.
    mixed = tmp_path / "mixed"
    mistral_base.save_pretrained(str(mixed))
    shutil.copy(bytelevel_patch_dir / "patch.json", mixed / "patch.json")
    assert_clean_error(
        run("stats", "--patch-tokenizer", str(mixed), "--corpus", str(corpus_gz)), "tokenizer"
    )
    res = run(
        "patch-model",
        "--model",
        str(tmp_path / "nomodel"),
        "--patch-tokenizer",
        str(bytelevel_patch_dir),
        "--out",
        str(tmp_path / "m"),
    )
    assert_clean_error(res, "config.json")
    assert not (tmp_path / "m").exists()


def test_ctrl_c_while_starting_exits_130_without_a_traceback(corpus_gz) -> None:
    import signal
    import time

    # The parser's imports (torch) take a second or more: Ctrl-C during them is an
    # interrupted start, as one during the command is, not a traceback.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptivocab", "stats", "--patch-tokenizer", "none",
         "--corpus", str(corpus_gz)],
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode in (130, 2), err  # 2: it already failed on the missing folder


def test_ctrl_c_during_finetune_exits_130_naming_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Training turns a Ctrl-C into TrainingInterrupted once its checkpoint is saved; the
    # command line answered it as bad input: exit 2 and "error: interrupted at step ...".
    import adaptivocab.cli
    from adaptivocab.trainer import TrainingInterrupted

    def interrupted(args: object) -> None:
        raise TrainingInterrupted(
            "interrupted at step 3/6; checkpoint saved in ck; rerun with --resume to continue"
        )

    monkeypatch.setattr(adaptivocab.cli, "_finetune", interrupted)
    res = run("finetune", "--model", "m", "--patch-tokenizer", "p", "--corpus", "c",
              "--out", str(tmp_path / "out"))
    assert res.returncode == 130, res.stderr
    assert "error" not in res.stderr and "--resume" in res.stderr, res.stderr


def test_a_patch_that_lengthens_the_text_is_warned_about(capsys):
    from adaptivocab.cli import warn_if_longer

    warn_if_longer({"reduction": 0.2, "ratio": 0.8})
    assert capsys.readouterr().err == ""
    warn_if_longer({"reduction": -0.389, "ratio": 1.389})
    err = capsys.readouterr().err
    assert err.startswith("warning: the patch makes this text 38.9% longer") and "--num-tokens" in err


@pytest.mark.parametrize("args, says", [
    (("build",), "the following arguments are required: --tokenizer"),
    (("build", "--tokenizer", "t", "--corpus", "c", "--out", "o", "--num-tokens", "0"),
     "argument --num-tokens: must be at least 1"),
    (("frob",), "invalid choice: 'frob'"),
    # Out of range, each was taken and did something else: a checkpoint every step, an lr
    # that climbs past --lr, no warmup, no clipping.
    *[(("finetune", "--model", "m", "--patch-tokenizer", "p", "--corpus", "c", "--out", "o",
        flag, value), f"argument {flag}: must be")
      for flag, value in (("--save-every", "-1"), ("--min-lr-ratio", "5"),
                          ("--warmup-steps", "-5"), ("--grad-clip", "-1"))],
])
def test_a_usage_error_is_one_line(args, says):
    """As `sarathi`'s: argparse printed its whole usage block above the line that mattered."""
    res = run(*args)
    assert res.returncode == 2 and res.stdout == "", res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--help)" in lines[0], res.stderr


@pytest.mark.parametrize("args, prog, unknown", [
    (("build", "--tokenizer", "t", "--corpus", "c", "--out", "o", "--numtokens", "3"),
     "adaptivocab build", "--numtokens 3"),
    (("eval", "--model", "m", "--corpus", "c", "--what"), "adaptivocab eval", "--what"),
    (("--bogus",), "adaptivocab", "--bogus"),
])
def test_an_unknown_flag_points_to_its_commands_help(args, prog, unknown):
    # It pointed to the top-level help, which lists the commands, not their flags.
    res = run(*args)
    assert res.returncode == 2 and res.stdout == "", res
    line = res.stderr.strip()
    assert f"{prog}: error: unrecognized arguments: {unknown} (see " in line, line
    assert line.endswith(f"{prog} --help)") and f"{prog} {prog}" not in line, line


def test_stats_of_documents_too_short_for_a_spread_say_so():
    """No document reaches the spread's minimum: the overall ratio was shown as a per-document
    spread (std 0.000 over one "document" of 11 tokens)."""
    import numpy as np

    from adaptivocab.stats import MIN_DOC_TOKENS_FOR_SPREAD, _spread, format_stats

    none = _spread(np.asarray([]))
    assert none["documents"] == 0 and none["mean"] is None
    some = _spread(np.asarray([0.5, 0.7]))
    assert some["documents"] == 2 and abs(some["mean"] - 0.6) < 1e-9
    row = {
        "documents": 1,
        "characters": 9,
        "bytes": 9,
        "base_tokens": 3,
        "patched_tokens": 2,
        "ratio": 2 / 3,
        "reduction": 1 / 3,
        "per_document": none,
    }
    table = format_stats(row)
    assert f"(>= {MIN_DOC_TOKENS_FOR_SPREAD} tokens)  n/a: no document is that long" in table
