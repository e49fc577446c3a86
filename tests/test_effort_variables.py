"""What a reasoning effort sets among a chat template's variables (``with_effort``), as
vLLM passes it: the template's ``reasoning_effort`` where it reads one, its thinking switch
``enable_thinking`` (off for "none") where it reads that and the request left it unset."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sarathi.reasoning import Qwen3Parser, ReasoningTags
from sarathi.transformers_utils.chat import EffortError, with_effort

EFFORT_ONLY = "{% if reasoning_effort is defined %}{{ reasoning_effort }}{% endif %}"
SWITCH_ONLY = "{% if enable_thinking is defined and not enable_thinking %}no think{% endif %}"
BOTH = EFFORT_ONLY + SWITCH_ONLY
NEITHER = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@dataclass
class _Tokenizer:
    chat_template: str | dict[str, str] | None


def _kwargs(template: str, effort, kwargs=None):
    return with_effort(_Tokenizer(template), None, None, effort, kwargs)


@pytest.mark.parametrize("effort", ["none", "low", "high", "max"])
def test_the_effort_sets_what_the_template_reads(effort):
    assert _kwargs(EFFORT_ONLY, effort) == {"reasoning_effort": effort}
    thinks = effort != "none"
    assert _kwargs(SWITCH_ONLY, effort) == {"enable_thinking": thinks}
    assert _kwargs(BOTH, effort) == {"reasoning_effort": effort, "enable_thinking": thinks}


def test_the_clients_switch_wins_and_other_variables_stay():
    sent = {"enable_thinking": True, "style": "terse"}
    assert _kwargs(SWITCH_ONLY, "none", sent) == sent
    assert _kwargs(SWITCH_ONLY, "high", {"style": "terse"}) == {
        "style": "terse",
        "enable_thinking": True,
    }
    assert _kwargs(SWITCH_ONLY, None, sent) is sent


def test_a_template_that_reads_neither_takes_only_none():
    assert _kwargs(NEITHER, "none") is None
    assert _kwargs(NEITHER, "none", {"style": "terse"}) == {"style": "terse"}
    with pytest.raises(EffortError, match="reads neither"):
        _kwargs(NEITHER, "low")


def test_a_disagreeing_template_variable_is_refused():
    with pytest.raises(EffortError, match="disagree"):
        _kwargs(EFFORT_ONLY, "high", {"reasoning_effort": "low"})


def test_named_templates_are_read_as_transformers_picks_them():
    tok = _Tokenizer({"default": NEITHER, "tool_use": SWITCH_ONLY})
    with pytest.raises(EffortError):
        with_effort(tok, None, None, "low", None)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert with_effort(tok, None, tools, "none", None) == {"enable_thinking": False}
    # --chat-template's template is the one rendered, whatever the tokenizer holds.
    assert with_effort(tok, EFFORT_ONLY, tools, "low", None) == {"reasoning_effort": "low"}


def test_qwen3s_parser_reads_no_reasoning_from_effort_none():
    """The switch the effort set is what the qwen3 parser reads: effort "none" on a
    template with enable_thinking is an answer with no reasoning."""
    parser = Qwen3Parser(ReasoningTags("<think>", "</think>", 7, 8, special=True))
    assert not parser.thinking([1, 2, 3], _kwargs(SWITCH_ONLY, "none"))
    assert parser.thinking([1, 2, 3], _kwargs(SWITCH_ONLY, "low"))
