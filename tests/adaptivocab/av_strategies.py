"""Hypothesis text strategies: arbitrary unicode mixed with domain fragments and specials."""

from __future__ import annotations

from hypothesis import strategies as st

SPECIALS = ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>"]

EMOJI = ["😀", "🚀", "👩‍💻", "🇫🇷", "✓", "\u200d", "\ufffd", "é", "日本語", "\U0001f9ea"]
WHITESPACE = st.text(alphabet=" \t\n\r\u00a0\u3000", min_size=1, max_size=8)


def text_with(fragments: list[str]) -> st.SearchStrategy[str]:
    part = st.one_of(
        st.text(max_size=12),
        st.sampled_from(fragments),
        st.sampled_from(SPECIALS),
        st.sampled_from(EMOJI),
        WHITESPACE,
    )
    return st.lists(part, max_size=14).map("".join)
