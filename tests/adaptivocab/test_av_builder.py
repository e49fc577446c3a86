"""Builder and PatchTokenizer surface: ids reused, specials kept, removed tokens expressible."""

from __future__ import annotations

import json

import pytest

from adaptivocab import AdaptiVocabError, BuildConfig, PatchTokenizer, build_patch
from adaptivocab.base import inspect_base


def test_ids_reused_and_vocab_unchanged(any_patch) -> None:
    tok, base = any_patch, any_patch.base_tokenizer
    assert len(tok) == len(base) and tok.vocab_size == base.vocab_size
    assert set(tok.ngram_pieces) == set(tok.removed_ids)
    assert all(0 <= i < len(base) for i in tok.removed_ids)
    assert tok.all_special_ids == base.all_special_ids
    assert tok.eos_token_id == base.eos_token_id and tok.bos_token_id == base.bos_token_id
    assert not set(base.all_special_ids) & tok.removed_ids
    for pieces in tok.ngram_pieces.values():
        assert 2 <= len(pieces) <= 3 and not set(pieces) & tok.removed_ids


def test_removed_tokens_expressible_and_not_protected(any_patch) -> None:
    info = inspect_base(any_patch.base_tokenizer)
    for rid, pieces in any_patch.patch.removed.items():
        assert rid not in info.protected
        assert not set(pieces) & any_patch.removed_ids
        assert "".join(info.id_to_token[p] for p in pieces) == info.id_to_token[rid]
    # The base tokenizer's encoding of a removed token's text still round-trips.
    for rid in list(any_patch.removed_ids)[:50]:
        text = any_patch.base_tokenizer.decode([rid])
        assert any_patch.decode(any_patch.encode(text)) == any_patch.base_tokenizer.decode(
            any_patch.base_tokenizer.encode(text)
        )


def test_mistral_never_removes_byte_or_single_char(mistral_patch) -> None:
    info = inspect_base(mistral_patch.base_tokenizer)
    for rid in mistral_patch.removed_ids:
        tok = info.id_to_token[rid]
        assert not tok.startswith("<0x") and len(tok) > 1


def test_decode_of_ngram_equals_pieces(any_patch) -> None:
    base = any_patch.base_tokenizer
    for tid, pieces in list(any_patch.ngram_pieces.items())[:50]:
        assert any_patch.decode([tid]) == base.decode(list(pieces))
        assert any_patch.convert_ids_to_tokens(tid) == "".join(
            base.convert_ids_to_tokens(list(pieces))
        )


def test_save_load_round_trip(any_patch, tmp_path) -> None:
    any_patch.reduction_stats = None
    any_patch.save_pretrained(tmp_path)
    loaded = PatchTokenizer.from_pretrained(tmp_path)
    assert loaded.ngram_pieces == any_patch.ngram_pieces
    text = "The scheduler returns a new slot.\n   x = torch.Tensor(1, 2) 🚀"
    assert loaded.encode(text) == any_patch.encode(text)
    assert loaded.reduction_ratio is None
    (tmp_path / "reduction_stats.json").write_text(json.dumps({"ratio": 0.75}))
    assert PatchTokenizer.from_pretrained(tmp_path).reduction_ratio == 0.75
    for bad in ("0.75", -1, 0, None):  # the cache is sized from it: never read as "none"
        (tmp_path / "reduction_stats.json").write_text(json.dumps({"ratio": bad}))
        with pytest.raises(AdaptiVocabError, match="ratio"):
            PatchTokenizer.from_pretrained(tmp_path)


def test_a_ratio_claiming_more_reduction_than_measured_is_refused(
    bytelevel_patch_dir, tmp_path
) -> None:
    """The KV cache is sized from the ratio: one below the file's own counts, or below
    what the patch's longest n-gram allows, would admit more requests than the pool holds."""
    import shutil

    folder = tmp_path / "p"
    shutil.copytree(bytelevel_patch_dir, folder)
    longest = max(len(p) for p in PatchTokenizer.from_pretrained(folder).ngram_pieces.values())
    stats = folder / "reduction_stats.json"
    counts = {"base_tokens": 1000, "patched_tokens": 900}
    for ok in ({"ratio": 0.9, **counts}, {"ratio": 0.95, **counts}, {"ratio": 1 / longest}):
        stats.write_text(json.dumps(ok))
        assert PatchTokenizer.from_pretrained(folder).reduction_ratio == ok["ratio"]
    for bad, why in (({"ratio": 0.5, **counts}, "measured"), ({"ratio": 0.99 / longest}, "n-gram")):
        stats.write_text(json.dumps(bad))
        with pytest.raises(AdaptiVocabError, match=why):
            PatchTokenizer.from_pretrained(folder)


def test_hf_surface(bytelevel_patch) -> None:
    tok = bytelevel_patch
    enc = tok("the scheduler returns a new slot")
    assert set(enc) >= {"input_ids", "attention_mask"} and len(enc["input_ids"]) == len(
        enc["attention_mask"]
    )
    batch = tok(["a", "the scheduler returns a new slot"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert tok.batch_decode([tok.encode("abc"), tok.encode("x y")]) == ["abc", "x y"]
    ids = tok.encode("the page pool")
    assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(ids)) == ids
    msgs = [{"role": "user", "content": "the scheduler returns a new slot"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == tok.base_tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    assert tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_dict=False
    ) == tok.encode(text, add_special_tokens=False)
    assert tok.eos_token == "<|endoftext|>" and tok.is_fast


def test_encode_returns_tensors_when_asked_as_hugging_face_does(bytelevel_patch) -> None:
    # return_tensors was dropped: a list went on to model.generate.
    tok = bytelevel_patch
    ids = tok.encode("the scheduler returns a new slot")
    pt = tok.encode("the scheduler returns a new slot", return_tensors="pt")
    assert pt.shape == (1, len(ids)) and pt[0].tolist() == ids
    cut = tok.encode(
        "the scheduler returns a new slot", truncation=True, max_length=2, return_tensors="np"
    )
    assert cut.tolist() == [ids[:2]]


def test_chat_template_returns_what_the_base_tokenizer_returns(bytelevel_patch) -> None:
    # return_dict and return_tensors were dropped: transformers 5 returns a BatchEncoding by
    # default, and `**tok.apply_chat_template(...)` into model.generate failed on a list.
    tok, base = bytelevel_patch, bytelevel_patch.base_tokenizer
    msgs = [{"role": "user", "content": "the scheduler returns a new slot"}]
    ids = tok.encode(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)
    assert type(tok.apply_chat_template(msgs)) is type(base.apply_chat_template(msgs))
    enc = tok.apply_chat_template(msgs, return_dict=True)
    assert enc["input_ids"] == ids and enc["attention_mask"] == [1] * len(ids)
    pt = tok.apply_chat_template(msgs, return_dict=False, return_tensors="pt")
    assert pt.tolist() == [ids]
    short = [{"role": "user", "content": "a"}]
    both = tok.apply_chat_template(
        [msgs, short], return_dict=True, padding=True, return_tensors="pt"
    )
    assert both["input_ids"].shape == both["attention_mask"].shape == (2, len(ids))
    with pytest.raises(ValueError, match="assistant tokens mask"):
        tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)


def test_setting_hugging_face_attributes_reaches_the_base_tokenizer(
    bytelevel_patch_dir,
) -> None:
    # Set on the PatchTokenizer, they were shadowed: padding stayed right-sided, the pad
    # token id stayed None and apply_chat_template said there was no template.
    tok = PatchTokenizer.from_pretrained(bytelevel_patch_dir)  # its own base: changed here
    tok.pad_token = "<|im_start|>"
    tok.padding_side = "left"
    tok.chat_template = "{{ messages[0]['content'] }}!"
    pad = tok.base_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tok.pad_token_id == pad == tok.base_tokenizer.pad_token_id
    batch = tok(["the scheduler returns", "a"], padding=True)
    short = tok.encode("a")
    assert batch["input_ids"][1][-len(short):] == short and batch["input_ids"][1][0] == pad
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == "hi!"
    assert "pad_token" not in vars(tok)


def test_builder_rejects_tiny_corpus(mistral_base) -> None:
    with pytest.raises(AdaptiVocabError, match="too small"):
        build_patch(mistral_base, ["hello world"], BuildConfig(num_tokens=10, progress=False))


def test_builder_rejects_tokenizer_without_merges(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="[UNK]")
    with pytest.raises(AdaptiVocabError, match="BPE"):
        build_patch(fast, ["a b"] * 2000, BuildConfig(num_tokens=1, progress=False))


def test_build_is_deterministic(bytelevel_base) -> None:
    from av_corpus import synthetic_docs

    docs = synthetic_docs(400, seed=3)
    a, _ = build_patch(bytelevel_base, docs, BuildConfig(num_tokens=40, progress=False))
    b, _ = build_patch(bytelevel_base, docs, BuildConfig(num_tokens=40, progress=False))
    assert a.ngrams == b.ngrams and a.removed == b.removed


def test_a_corpus_whose_documents_all_hash_held_out_still_trains(tmp_path) -> None:
    """One big paragraph lands in the held-out split one time in ten: the training text then
    falls back to it, as the held-out text falls back to the training text."""
    from adaptivocab.corpus import is_held_out, load_corpus

    doc = next(d for d in (f"document {i} " * 50 for i in range(200)) if is_held_out(d.strip()))
    path = tmp_path / "onedoc.txt"
    path.write_text(doc.strip())
    corpus = load_corpus([path])
    assert corpus.train and corpus.train == corpus.held_out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("model_max", [12, int(1e30)])
def test_cutting_and_padding_follow_hugging_face(bytelevel_patch, model_max) -> None:
    # max_length without truncation did not cut (Hugging Face cuts, with a warning), and
    # padding="max_length" without max_length padded to the longest (Hugging Face pads to
    # model_max_length, or not at all where the model has none). Texts the patch leaves
    # alone, so the base tokenizer's answer is the patched one's too.
    import itertools

    import transformers

    tok, base = bytelevel_patch, bytelevel_patch.base_tokenizer
    texts = ["7", "0123 4567 89 ABCD EFGH 0123 4567 89 ABCD EFGH 0123"]
    assert [tok.encode(t) for t in texts] == [base.encode(t) for t in texts]
    before = base.model_max_length, base.pad_token
    base.model_max_length, base.pad_token = model_max, base.eos_token
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its truncation and padding warnings
    try:
        for padding, truncation, max_length in itertools.product(
            [False, True, "longest", "max_length", "do_not_pad"],
            [None, False, True, "longest_first", "do_not_truncate"],
            [None, 3, 20],
        ):
            kw = {"padding": padding, "max_length": max_length}
            if truncation is not None:
                kw["truncation"] = truncation
            assert dict(tok(texts, **kw)) == dict(base(texts, **kw)), kw
            one = {k: v for k, v in kw.items() if k != "padding"}
            assert tok.encode(texts[1], **one) == base.encode(texts[1], **one), one
    finally:
        base.model_max_length, base.pad_token = before
        transformers.logging.set_verbosity(verbosity)
