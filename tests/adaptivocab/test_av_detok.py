"""Incremental detokenization is exact for patch and base tokenizers."""

from __future__ import annotations

from av_strategies import text_with
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptivocab import IncrementalDecoder

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def stream(tok, ids: list[int], cuts: list[int], skip: bool) -> str:
    dec = IncrementalDecoder(tok, skip_special_tokens=skip)
    out, pos = [], 0
    for c in cuts:
        out.append(dec.step(ids[pos : pos + c]))
        pos += c
    while pos < len(ids):
        out.append(dec.step(ids[pos]))
        pos += 1
    out.append(dec.flush())
    return "".join(out)


def check(tok, data) -> None:
    frags = [tok.base_tokenizer.decode(list(p)) for p in list(tok.ngram_pieces.values())[:100]]
    text = data.draw(text_with(frags))
    skip = data.draw(st.booleans())
    for t in (tok, tok.base_tokenizer):
        ids = t.encode(text)
        cuts = data.draw(st.lists(st.integers(1, 4), max_size=len(ids)))
        assert stream(t, ids, cuts, skip) == t.decode(ids, skip_special_tokens=skip)


@given(data=st.data())
@SETTINGS
def test_incremental_mistral(mistral_patch, data) -> None:
    check(mistral_patch, data)


@given(data=st.data())
@SETTINGS
def test_incremental_bytelevel(bytelevel_patch, data) -> None:
    check(bytelevel_patch, data)


def test_incremental_holds_back_split_characters(bytelevel_patch) -> None:
    tok = bytelevel_patch
    ids = tok.encode("🚀🚀 x", add_special_tokens=False)
    dec = IncrementalDecoder(tok)
    deltas = [dec.step(i) for i in ids] + [dec.flush()]
    assert "".join(deltas) == tok.decode(ids)
    assert all("\ufffd" not in d for d in deltas)
