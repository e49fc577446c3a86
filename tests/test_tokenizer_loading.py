"""Loading tokenizers: a SentencePiece-only folder (tokenizer.model), a folder with none,
and serving token ids only (--skip-tokenizer-init)."""

from __future__ import annotations

import os
import shutil

import pytest

from sarathi import LLM, SamplingParams

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello sarathi",
    "tokenizers turn text into ids and back again",
] * 50


@pytest.fixture(scope="module")
def sp_model_dir(tiny_models, tmp_path_factory):
    """The tiny Llama with only a SentencePiece tokenizer.model beside it."""
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("sp-llama")
    for name in os.listdir(tiny_models["llama"]):
        if not name.startswith("tokenizer") and name != "special_tokens_map.json":
            shutil.copy(os.path.join(tiny_models["llama"], name), folder)
    text = folder / "corpus.txt"
    text.write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=320,
        hard_vocab_limit=False,
        minloglevel=2,
        model_type="bpe",
        byte_fallback=True,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
    )
    os.remove(folder / "tokenizer.vocab")
    os.remove(text)
    return str(folder)


def test_a_sentencepiece_only_folder_loads_and_tokenizes_like_transformers(sp_model_dir):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(sp_model_dir)
    llm = LLM(sp_model_dir)
    for text in ("hello world", "the lazy fox, again", "ünïcödé bytes"):
        assert llm.get_tokenizer().encode(text) == ref.encode(text)
    out = llm.generate(
        ["hello world"], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    )[0].outputs[0]
    assert len(out.token_ids) == 4


def test_a_folder_without_a_tokenizer_names_the_way_out(tiny_models, tmp_path):
    for name in os.listdir(tiny_models["llama"]):
        if not name.startswith("tokenizer") and name != "special_tokens_map.json":
            shutil.copy(os.path.join(tiny_models["llama"], name), tmp_path)
    with pytest.raises(ValueError, match="--tokenizer") as e:
        LLM(str(tmp_path))
    assert "--skip-tokenizer-init" in str(e.value)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True)
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 3 and out.outputs[0].text == ""
    bad = llm.generate(["text needs a tokenizer"], SamplingParams(max_tokens=2))[0]
    assert bad.error and "--skip-tokenizer-init" in bad.error


def test_a_tokenizer_option_naming_a_folder_without_one_says_so(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="^--tokenizer .* holds no tokenizer") as e:
        LLM(tiny_models["llama"], tokenizer=str(tmp_path))
    assert "pass --tokenizer" not in str(e.value)


def test_a_prompt_past_the_context_gets_the_engines_error_alone(caplog):
    """transformers' warning that such a text "will result in indexing errors" was logged
    beside the engine's own refusal, which never runs it through the model."""
    llm = LLM()
    out = llm.generate(["word " * 3000], SamplingParams(max_tokens=2))[0]
    assert "context" in out.error
    assert "indexing errors" not in caplog.text


@pytest.mark.parametrize("option", ["tokenizer", "patch_tokenizer"])
def test_a_tokenizer_given_with_skip_tokenizer_init_is_refused(tiny_models, option):
    """skip_tokenizer_init loads no tokenizer: the one named was dropped without a word, and
    a patch tokenizer's rows were never built into the base weights."""
    with pytest.raises(ValueError, match=f"^{option} is not loaded with skip_tokenizer_init"):
        LLM(tiny_models["llama"], skip_tokenizer_init=True, **{option: tiny_models["llama"]})
