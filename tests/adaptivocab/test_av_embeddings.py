"""Embedding init and patch-model on tiny random Llama models."""

from __future__ import annotations

import math

import pytest
import torch

from adaptivocab import AdaptiVocabError
from adaptivocab.embeddings import patch_embeddings, patch_state_dict_rows, piece_weights
from adaptivocab.model_io import patch_model_folder


def tiny_llama(vocab: int, tied: bool, folder) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=tied,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(folder))


def load(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def expected(matrix: torch.Tensor, pieces: tuple[int, ...], init: str, side: str) -> torch.Tensor:
    w = piece_weights(len(pieces), init, side)
    return sum(wi * matrix[p].float() for wi, p in zip(w, pieces)).to(matrix.dtype)


def test_exp_weights_direction() -> None:
    inp, out = piece_weights(3, "exp", "input"), piece_weights(3, "exp", "output")
    assert inp[2] > inp[1] > inp[0] and out[0] > out[1] > out[2]
    assert math.isclose(sum(inp), 1.0) and math.isclose(inp[2] / inp[1], math.e)
    assert piece_weights(2, "exp", "input", exp_base=3.0) == pytest.approx([0.25, 0.75])
    assert piece_weights(3, "exp", "output", exp_base=1e200) == pytest.approx([1.0, 0.0, 0.0])


@pytest.mark.parametrize("base", [0.0, -1.0, float("nan"), float("inf")])
def test_exp_base_must_be_positive_and_finite(base: float) -> None:
    from adaptivocab.errors import AdaptiVocabError

    with pytest.raises(AdaptiVocabError, match="exp-base"):
        piece_weights(3, "exp", "input", exp_base=base)


@pytest.mark.parametrize("tied", [False, True])
def test_patch_model_untied_and_tied(bytelevel_patch, bytelevel_patch_dir, tmp_path, tied) -> None:
    model_dir, out = tmp_path / "m", tmp_path / "out"
    tiny_llama(len(bytelevel_patch), tied, model_dir)
    patch_model_folder(model_dir, bytelevel_patch_dir, out, init="exp", progress=False)
    before, after = load(model_dir), load(out)
    assert set(before) == set(after)
    swapped = sorted(bytelevel_patch.ngram_pieces)
    keep = torch.ones(len(bytelevel_patch), dtype=torch.bool)
    keep[swapped] = False
    emb0, emb1 = before["model.embed_tokens.weight"], after["model.embed_tokens.weight"]
    assert torch.equal(emb0[keep], emb1[keep])  # bit-identical surviving rows
    for name, t in before.items():
        if "embed_tokens" not in name and name != "lm_head.weight":
            assert torch.equal(t, after[name])
    for tid in swapped[:20]:
        pieces = bytelevel_patch.ngram_pieces[tid]
        assert torch.allclose(emb1[tid], expected(emb0, pieces, "exp", "input"))
        if not tied:
            head0, head1 = before["lm_head.weight"], after["lm_head.weight"]
            assert torch.allclose(head1[tid], expected(head0, pieces, "exp", "output"))
    if tied:
        assert "lm_head.weight" not in after
    else:
        assert torch.equal(before["lm_head.weight"][keep], after["lm_head.weight"][keep])
    assert (out / "patch.json").is_file() and (out / "config.json").is_file()
    from adaptivocab import PatchTokenizer

    assert PatchTokenizer.from_pretrained(out).ngram_pieces == bytelevel_patch.ngram_pieces
    if tied:
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(str(out))
        assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
        assert torch.equal(model.model.embed_tokens.weight, emb1)


@pytest.mark.parametrize("init", ["mean", "first", "last", "random"])
def test_other_inits(bytelevel_patch, init) -> None:
    torch.manual_seed(1)
    emb, head = torch.randn(len(bytelevel_patch), 8), torch.randn(len(bytelevel_patch), 8)
    e1, h1 = patch_embeddings(emb, head, bytelevel_patch, init=init, seed=5)
    tid, pieces = next(iter(bytelevel_patch.ngram_pieces.items()))
    if init == "random":
        e2, _ = patch_embeddings(emb, head, bytelevel_patch, init=init, seed=5)
        assert torch.equal(e1, e2)
    else:
        assert torch.allclose(e1[tid], expected(emb, pieces, init, "input"))
        assert torch.allclose(h1[tid], expected(head, pieces, init, "output"))
    assert h1 is not e1


def test_state_dict_rows_tied_uses_input_rule(bytelevel_patch) -> None:
    emb = torch.randn(len(bytelevel_patch), 8)
    out = patch_state_dict_rows(
        {"model.embed_tokens.weight": emb, "x": torch.zeros(1)}, bytelevel_patch
    )
    tid, pieces = next(iter(bytelevel_patch.ngram_pieces.items()))
    assert torch.allclose(
        out["model.embed_tokens.weight"][tid], expected(emb, pieces, "exp", "input")
    )
    assert out["x"] is not None and torch.equal(emb, emb)  # input untouched


def test_vocab_mismatch_is_clear(bytelevel_patch, bytelevel_patch_dir, tmp_path) -> None:
    tiny_llama(len(bytelevel_patch) + 500, False, tmp_path / "m")
    with pytest.raises(AdaptiVocabError, match="vocab size mismatch"):
        patch_model_folder(tmp_path / "m", bytelevel_patch_dir, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
