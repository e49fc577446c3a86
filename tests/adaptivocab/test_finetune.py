"""finetune: the loss falls, frozen tensors stay bit-identical, checkpoints resume exactly, bad input is clean."""

from __future__ import annotations

import json

import pytest
import torch
from av_corpus import synthetic_docs
from tiny_models import load_tensors, one_thread, tiny_llama_folder, write_corpus

from adaptivocab import AdaptiVocabError
from adaptivocab.finetune import FinetuneJob, run_finetune
from adaptivocab.hf_model import load_causal_lm
from adaptivocab.model_io import patch_model_folder
from adaptivocab.trainable import parse_train_spec, select_trainable
from adaptivocab.trainer import TrainConfig, TrainingInterrupted, lr_at, train
from adaptivocab.training_data import pack_documents

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(
        tmp_path_factory.mktemp("ft") / "corpus.txt.gz", synthetic_docs(400, seed=3)
    )


@pytest.fixture(scope="module")
def packed(bytelevel_patch):
    return pack_documents(bytelevel_patch, synthetic_docs(200, seed=4), seq_len=32, progress=False)


def _model(tmp_path, patch, tied=False, layers=3):
    folder = tiny_llama_folder(
        tmp_path / f"m{int(tied)}{layers}", len(patch), tied=tied, layers=layers
    )
    return load_causal_lm(folder, patch)


def test_loss_falls(tmp_path, bytelevel_patch, packed) -> None:
    loaded = _model(tmp_path, bytelevel_patch)
    sel = select_trainable(loaded.model, parse_train_spec("embed,lm_head,first,last"))
    result = train(
        loaded.model,
        sel.names,
        packed,
        TrainConfig(steps=25, batch_size=4, lr=5e-3),
        CPU,
        progress=False,
    )
    assert result.steps == 25 and result.tokens == 25 * 4 * 32
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.3, result.losses


def test_schedule_warmup_then_cosine() -> None:
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(
        0.1, abs=1e-3
    )


@pytest.mark.parametrize("tied,dtype", [(False, torch.bfloat16), (True, torch.float32)])
def test_only_chosen_tensors_change(
    tmp_path, bytelevel_patch, bytelevel_patch_dir, corpus, tied, dtype
) -> None:
    base = tiny_llama_folder(tmp_path / "base", len(bytelevel_patch), tied=tied, dtype=dtype)
    patched = tmp_path / "patched"
    patch_model_folder(base, bytelevel_patch_dir, patched, progress=False)
    out = tmp_path / "out"
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-2)
    run_finetune(
        FinetuneJob(
            model_dir=str(patched),
            patch_dir=str(bytelevel_patch_dir),
            corpus=(str(corpus),),
            out=str(out),
            steps=4,
            seq_len=32,
            train=cfg,
            progress=False,
        ),
        log=lambda _: None,
    )
    before, after = load_tensors(patched), load_tensors(out)
    assert set(before) == set(after)
    trained = ("embed_tokens", "lm_head", "layers.0.", "layers.2.")
    for name, t in before.items():
        assert after[name].dtype == t.dtype
        if any(k in name for k in trained):
            assert not torch.equal(after[name], t), f"{name} should have trained"
        else:
            assert torch.equal(after[name], t), f"{name} is frozen but changed"
    # The folder is complete and self-describing: weights, config, patch tokenizer, metadata.
    for f in ("config.json", "patch.json", "tokenizer.json", "adaptivocab_model.json"):
        assert (out / f).is_file()
    meta = json.loads((out / "adaptivocab_model.json").read_text())
    assert meta["init"] == "exp" and meta["finetune"]["steps"] == 4
    assert not (tmp_path / "out.checkpoint").exists()  # removed after success
    if tied:
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(str(out))
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()


def test_tied_partial_choice_trains_shared_matrix(tmp_path, bytelevel_patch) -> None:
    loaded = _model(tmp_path, bytelevel_patch, tied=True)
    sel = select_trainable(loaded.model, ("embed",))
    assert sel.tied and sel.note and "shared" in sel.note
    assert sel.names == ("model.embed_tokens.weight",)
    sel = select_trainable(loaded.model, ("first", "last"))
    assert not loaded.model.model.embed_tokens.weight.requires_grad and sel.note is None


def test_resume_matches_uninterrupted_run(tmp_path, bytelevel_patch, packed) -> None:
    cfg = TrainConfig(steps=6, batch_size=3, lr=5e-3, warmup_steps=2)
    straight = _model(tmp_path, bytelevel_patch).model
    names = select_trainable(straight, parse_train_spec("embed,lm_head,first,last")).names
    train(straight, names, packed, cfg, CPU, progress=False)

    ckpt = tmp_path / "ckpt"
    first = _model(tmp_path, bytelevel_patch).model
    select_trainable(first, parse_train_spec("embed,lm_head,first,last"))

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="step 3/6"):
        train(
            first, names, packed, cfg, CPU, checkpoint_dir=ckpt, progress=False, on_step=stop_at_3
        )
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 3 and state["position"] == 9
    assert not list(ckpt.glob("*.pt")) and not list(ckpt.glob("*.pkl"))

    second = _model(
        tmp_path, bytelevel_patch
    ).model  # a fresh process would start from the folder again
    select_trainable(second, parse_train_spec("embed,lm_head,first,last"))
    result = train(
        second, names, packed, cfg, CPU, checkpoint_dir=ckpt, resume=True, progress=False
    )
    assert result.resumed_from == 3 and result.steps == 6 and len(result.losses) == 6
    for (n, a), (_, b) in zip(straight.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), f"{n} differs after resume"

    other = _model(tmp_path, bytelevel_patch).model
    select_trainable(other, parse_train_spec("embed,lm_head,first,last"))
    with pytest.raises(AdaptiVocabError, match="different settings"):
        train(
            other,
            names,
            packed,
            TrainConfig(steps=6, batch_size=3, lr=1e-3),
            CPU,
            checkpoint_dir=ckpt,
            resume=True,
            progress=False,
        )


def test_bad_train_spec() -> None:
    with pytest.raises(AdaptiVocabError, match="unknown --train"):
        parse_train_spec("embed,decoder")
    with pytest.raises(AdaptiVocabError, match="empty"):
        parse_train_spec(" , ")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in process (a subprocess costs seconds of torch import per call)."""
    from adaptivocab.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2 and "Traceback" not in err and needle in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert (
        lines[-1].startswith("adaptivocab finetune: error:")
        and sum("error" in ln for ln in lines) == 1
    ), err


def test_cli_finetune_and_clean_errors(
    tmp_path, capsys, bytelevel_patch, bytelevel_patch_dir, corpus
) -> None:
    base = tiny_llama_folder(tmp_path / "base", len(bytelevel_patch), layers=2)
    out = tmp_path / "out"
    common = [
        "--patch-tokenizer",
        str(bytelevel_patch_dir),
        "--corpus",
        str(corpus),
        "--seq-len",
        "32",
        "--quiet",
    ]
    code, stdout, err = cli(
        capsys,
        "finetune",
        "--model",
        str(base),
        *common,
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--train",
        "embed,lm_head",
        "--save-every",
        "1",
        "--keep-checkpoint",
    )
    assert code == 0, err
    assert "base model" in stdout and "wrote" in stdout
    assert (out / "model.safetensors").is_file() and (
        tmp_path / "out.checkpoint" / "state.json"
    ).is_file()
    # A kept checkpoint is not silently reused or clobbered.
    code, _, err = cli(
        capsys,
        "finetune",
        "--model",
        str(base),
        *common,
        "--out",
        str(tmp_path / "o2"),
        "--checkpoint-dir",
        str(tmp_path / "out.checkpoint"),
        "--steps",
        "3",
    )
    assert_one_line_error(code, err, "--resume")
    code, _, err = cli(
        capsys,
        "finetune",
        "--model",
        str(base),
        *common,
        "--out",
        str(tmp_path / "o3"),
        "--train",
        "embed,mlp",
    )
    assert_one_line_error(code, err, "unknown --train")
    code, _, err = cli(
        capsys,
        "finetune",
        "--model",
        str(tmp_path / "nope"),
        *common,
        "--out",
        str(tmp_path / "o4"),
    )
    assert_one_line_error(code, err, "config.json")
    code, _, err = cli(
        capsys,
        "finetune",
        "--model",
        str(base),
        *common[:-3],
        "--seq-len",
        "100000",
        "--out",
        str(tmp_path / "o5"),
    )
    assert_one_line_error(code, err, "longer than the model's context (256 positions")
    with pytest.raises(AdaptiVocabError, match="fewer than one sequence of 64"):
        pack_documents(bytelevel_patch, ["a few words"], seq_len=64, progress=False)
    code, _, err = cli(
        capsys, "finetune", "--model", str(base), *common, "--out", str(out), "--steps", "1"
    )
    assert_one_line_error(code, err, "not empty")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".o", "o2", "o3", "o4", "o5"))]


def test_bf16_autocast_path(tmp_path, bytelevel_patch, packed) -> None:
    """The GPU recipe (bf16 autocast, fp32 master weights) exercised on CPU."""
    loaded = _model(tmp_path, bytelevel_patch, layers=1)
    sel = select_trainable(loaded.model, ("all",))
    result = train(
        loaded.model,
        sel.names,
        packed,
        TrainConfig(steps=3, batch_size=2, precision="bf16"),
        CPU,
        progress=False,
    )
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert len(result.losses) == 3 and all(x == x for x in result.losses)


@pytest.mark.parametrize("field, value", [
    ("save_every", -1), ("min_lr_ratio", 5.0), ("warmup_steps", -5), ("grad_clip", -1.0),
])
def test_out_of_range_schedule_values_are_refused(field, value):
    TrainConfig(steps=4).validate()
    with pytest.raises(AdaptiVocabError, match=field.replace("_", "-")):
        TrainConfig(steps=4, **{field: value}).validate()
