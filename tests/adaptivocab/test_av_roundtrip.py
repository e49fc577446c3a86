"""Round trip and encoder properties on both tokenizer kinds."""

from __future__ import annotations

import numpy as np
from av_strategies import text_with
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def fragments(tok) -> list[str]:
    """Decoded n-grams, so generated text actually exercises the merges."""
    pieces = list(tok.ngram_pieces.values())[:200]
    return [tok.base_tokenizer.decode(list(p)) for p in pieces] + ["    ", "\n\n", "::", "``"]


def check_roundtrip(tok, text: str) -> None:
    base = tok.base_tokenizer
    for special in (True, False):
        ids = tok.encode(text, add_special_tokens=special)
        base_ids = base.encode(text, add_special_tokens=special)
        assert tok.decode(ids) == base.decode(base_ids)
        assert tok.decode(ids, skip_special_tokens=True) == base.decode(
            base_ids, skip_special_tokens=True
        )
        assert all(0 <= i < len(tok) for i in ids)
        # The vectorised matcher and the reference walk must agree.
        flat, lengths = tok._matcher.apply_flat(
            np.asarray(base_ids, dtype=np.int64), np.asarray([len(base_ids)])
        )
        assert flat.tolist() == tok._matcher._apply_py(base_ids) == ids


@given(data=st.data())
@SETTINGS
def test_roundtrip_mistral(mistral_patch, data) -> None:
    check_roundtrip(mistral_patch, data.draw(text_with(fragments(mistral_patch))))


@given(data=st.data())
@SETTINGS
def test_roundtrip_bytelevel(bytelevel_patch, data) -> None:
    check_roundtrip(bytelevel_patch, data.draw(text_with(fragments(bytelevel_patch))))


@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_batch_equals_single(any_patch, data) -> None:
    texts = data.draw(st.lists(text_with(fragments(any_patch)), min_size=1, max_size=30))
    # Repeat to cross the threshold where the numpy path takes over.
    texts = texts * 8
    assert any_patch.encode_batch(texts) == [any_patch.encode(t) for t in texts]


def test_long_text_uses_numpy_path_and_round_trips(any_patch) -> None:
    text = " ".join(fragments(any_patch)) * 5
    ids = any_patch.encode(text)
    assert any_patch.decode(ids) == any_patch.base_tokenizer.decode(
        any_patch.base_tokenizer.encode(text)
    )
    assert len(ids) < len(any_patch.base_tokenizer.encode(text))


def test_real_corpus_lines_round_trip(mistral_patch, mistral_docs) -> None:
    base = mistral_patch.base_tokenizer
    lines = [ln for d in mistral_docs[:400] for ln in d.split("\n")]
    got = mistral_patch.batch_decode(mistral_patch.encode_batch(lines))
    want = base.batch_decode([base.encode(ln) for ln in lines])
    assert got == want
