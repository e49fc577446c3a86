"""Fixtures: base tokenizers (Mistral from ../shared/assets, a byte-level BPE trained here) and patches."""

from __future__ import annotations

from pathlib import Path

import pytest

from av_corpus import MISTRAL, PYDOCS, synthetic_docs


@pytest.fixture(scope="session")
def mistral_base():
    if not (MISTRAL / "tokenizer.json").is_file():
        pytest.skip(
            f"Mistral tokenizer not found at {MISTRAL} (../shared/assets is absent in a fresh clone)"
        )
    from adaptivocab.base import load_base_tokenizer

    return load_base_tokenizer(MISTRAL)


@pytest.fixture(scope="session")
def mistral_docs() -> list[str]:
    if not PYDOCS.is_file():
        pytest.skip(f"corpus not found at {PYDOCS} (../shared/assets is absent in a fresh clone)")
    from adaptivocab.corpus import read_text, split_documents

    return split_documents(read_text(PYDOCS)[:600_000])


@pytest.fixture(scope="session")
def mistral_patch(mistral_base, mistral_docs):
    from adaptivocab import BuildConfig, PatchTokenizer, build_patch

    patch, _ = build_patch(
        mistral_base, mistral_docs, BuildConfig(num_tokens=400, max_ngram=3, progress=False)
    )
    return PatchTokenizer(mistral_base, patch)


@pytest.fixture(scope="session")
def bytelevel_dir(tmp_path_factory) -> Path:
    """A GPT-2-style byte-level BPE trained on the synthetic text, saved as an HF folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(synthetic_docs(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    out = tmp_path_factory.mktemp("bytelevel")
    fast.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def bytelevel_base(bytelevel_dir):
    from adaptivocab.base import load_base_tokenizer

    return load_base_tokenizer(bytelevel_dir)


@pytest.fixture(scope="session")
def bytelevel_patch(bytelevel_base):
    from adaptivocab import BuildConfig, PatchTokenizer, build_patch

    patch, _ = build_patch(
        bytelevel_base,
        synthetic_docs(seed=1),
        BuildConfig(num_tokens=120, max_ngram=3, progress=False),
    )
    return PatchTokenizer(bytelevel_base, patch)


@pytest.fixture(scope="session")
def bytelevel_patch_dir(bytelevel_patch, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bl_patch")
    bytelevel_patch.save_pretrained(out)
    return out


@pytest.fixture(params=["mistral", "bytelevel"])
def any_patch(request):
    """Both supported tokenizer kinds, each with its patch."""
    return request.getfixturevalue(f"{request.param}_patch")
