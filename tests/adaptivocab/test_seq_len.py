"""--seq-len of finetune and eval against the model's context (config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptivocab import AdaptiVocabError
from adaptivocab.cli import main
from adaptivocab.model_io import DEFAULT_SEQ_LEN, fit_seq_len, model_context


def _config(folder: Path, **config: object) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_context_is_read_from_each_kind_of_config() -> None:
    assert model_context({"max_position_embeddings": 4096}) == 4096
    assert model_context({"n_positions": 1024, "n_ctx": 1024}) == 1024  # GPT-2
    assert model_context({"text_config": {"max_position_embeddings": 2048}}) == 2048
    assert model_context({"vocab_size": 10}) is None


def test_the_default_is_cut_to_a_short_context_and_a_longer_seq_len_is_refused(
    tmp_path: Path,
) -> None:
    short = _config(tmp_path / "short", n_positions=128)
    assert fit_seq_len(short, None) == 128 and fit_seq_len(short, 128) == 128
    # A learned position table has no row past its context: an IndexError in the forward.
    with pytest.raises(AdaptiVocabError, match="longer than the model's context .128"):
        fit_seq_len(short, 129)
    long = _config(tmp_path / "long", max_position_embeddings=4096)
    assert fit_seq_len(long, None) == DEFAULT_SEQ_LEN and fit_seq_len(long, 2048) == 2048
    unknown = _config(tmp_path / "unknown", vocab_size=10)
    assert fit_seq_len(unknown, None) == DEFAULT_SEQ_LEN and fit_seq_len(unknown, 9999) == 9999


@pytest.mark.parametrize("command", ["finetune", "eval"])
def test_the_cli_refuses_it_in_one_line_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _config(tmp_path / "m", max_position_embeddings=256)
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text\n\nmore text\n")
    args = [command, "--model", str(model), "--corpus", str(corpus), "--seq-len", "257"]
    if command == "finetune":
        # Neither folder is read: the refusal comes first.
        args += ["--patch-tokenizer", str(tmp_path / "p"), "--out", str(tmp_path / "o")]
    code = main([*args, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"adaptivocab {command}: error: --seq-len 257 is longer than the model's context "
        "(256 positions in its config.json); pass --seq-len 256 or less"
    )
    assert not (tmp_path / "o").exists()
