"""bits_per_byte: every token scored once, fitted text beats random text, tokenizers compared fairly."""

from __future__ import annotations

import random

import pytest
import torch
from av_corpus import synthetic_docs
from tiny_models import one_thread, tiny_llama_folder, write_corpus

from adaptivocab import AdaptiVocabError
from adaptivocab.eval import _windows, bits_per_byte, take_bytes
from adaptivocab.hf_model import load_causal_lm
from adaptivocab.trainable import select_trainable
from adaptivocab.trainer import TrainConfig, train
from adaptivocab.training_data import pack_documents


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def random_text(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzKV0123456789 .,:()_-é🚀"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(40, 160))) for _ in range(n)]


@pytest.mark.parametrize("seq_len", [5, 8, 64])
def test_windows_score_every_target_once(seq_len: int) -> None:
    ids = list(range(37))
    seen: list[int] = []
    for window, first in _windows(ids, seq_len):
        assert len(window) <= seq_len and first >= 1
        seen.extend(window[first:])
    assert seen == ids[1:]


def test_fitted_text_scores_lower_than_random(tmp_path, bytelevel_patch) -> None:
    loaded = load_causal_lm(
        tiny_llama_folder(tmp_path / "m", len(bytelevel_patch), layers=2), bytelevel_patch
    )
    model = loaded.model
    names = select_trainable(model, ("all",)).names
    data = pack_documents(bytelevel_patch, synthetic_docs(300, seed=5), seq_len=48, progress=False)
    held = synthetic_docs(40, seed=6)
    noise = random_text(40)
    before = bits_per_byte(model, bytelevel_patch, held, seq_len=48, progress=False)
    train(
        model,
        names,
        data,
        TrainConfig(steps=30, batch_size=4, lr=1e-2),
        torch.device("cpu"),
        progress=False,
    )
    fitted = bits_per_byte(model, bytelevel_patch, held, seq_len=48, progress=False)
    rand = bits_per_byte(model, bytelevel_patch, noise, seq_len=48, progress=False)
    assert fitted["bpb"] < 0.7 * before["bpb"]
    assert fitted["bpb"] < 0.5 * rand["bpb"]
    assert fitted["bytes"] == sum(len(t.encode("utf-8")) for t in held)
    assert fitted["tokens_per_byte"] == pytest.approx(fitted["tokens"] / fitted["bytes"])


def test_every_token_counted_and_windowing_is_close(tmp_path, bytelevel_patch) -> None:
    model = load_causal_lm(
        tiny_llama_folder(tmp_path / "m", len(bytelevel_patch), layers=1), bytelevel_patch
    ).model
    docs = ["\n".join(synthetic_docs(12, seed=9))]  # one long document
    ids = bytelevel_patch.encode(docs[0])
    whole = bits_per_byte(model, bytelevel_patch, docs, seq_len=256, progress=False)
    windowed = bits_per_byte(
        model, bytelevel_patch, docs, seq_len=16, batch_tokens=40, progress=False
    )
    # The first token is scored too (after the BOS this tokenizer does not add itself).
    assert whole["tokens"] == windowed["tokens"] == len(ids)
    assert windowed["bpb"] == pytest.approx(whole["bpb"], rel=0.05)


def test_base_and_patched_tokenizers_on_the_same_bytes(
    tmp_path, bytelevel_patch, bytelevel_base
) -> None:
    folder = tiny_llama_folder(tmp_path / "m", len(bytelevel_patch), layers=1)
    texts = synthetic_docs(30, seed=11)
    base = bits_per_byte(load_causal_lm(folder).model, bytelevel_base, texts, progress=False)
    patched = bits_per_byte(
        load_causal_lm(folder, bytelevel_patch).model, bytelevel_patch, texts, progress=False
    )
    assert base["bytes"] == patched["bytes"]
    assert patched["tokens_per_byte"] < 0.9 * base["tokens_per_byte"]


def test_take_bytes_and_bad_input(tmp_path, bytelevel_patch) -> None:
    docs = ["aaaa", "bbbb", "cccc"]
    assert take_bytes(docs, 5) == ["aaaa", "bbbb"] and take_bytes(docs, None) == docs
    model = load_causal_lm(tiny_llama_folder(tmp_path / "m", len(bytelevel_patch), layers=1)).model
    with pytest.raises(AdaptiVocabError, match="no text"):
        bits_per_byte(model, bytelevel_patch, ["", ""], progress=False)


def test_cli_eval(tmp_path, capsys, bytelevel_patch, bytelevel_patch_dir) -> None:
    from adaptivocab.cli import main

    folder = tiny_llama_folder(tmp_path / "m", len(bytelevel_patch), layers=1)
    corpus = write_corpus(tmp_path / "c.txt.gz", synthetic_docs(200, seed=12))
    assert (
        main(
            [
                "eval",
                "--model",
                str(folder),
                "--patch-tokenizer",
                str(bytelevel_patch_dir),
                "--corpus",
                str(corpus),
                "--max-bytes",
                "3000",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert '"bpb"' in captured.out and '"patched_at_load": true' in captured.out
    # --quiet also hides transformers' own "Loading weights" bar, and leaves it on for others.
    from transformers.utils import logging as hf_logging

    assert "Loading weights" not in captured.err and hf_logging.is_progress_bar_enabled()
    code = main(["eval", "--model", str(tmp_path / "missing"), "--corpus", str(corpus), "--quiet"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "Traceback" not in err
        and err.strip().splitlines()[-1].startswith("adaptivocab eval: error:")
        and "not a Hugging Face model folder" in err  # was "tokenizer folder not found"
    )
    code = main(["eval", "--model", str(folder), "--corpus", str(tmp_path / "nope.txt"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not found" in err
