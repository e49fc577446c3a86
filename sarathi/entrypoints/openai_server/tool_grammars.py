"""The output constraint of ``tool_choice: "auto"`` with strict tools: a Lark grammar (in
llguidance's dialect) per tool-call format of tool_parsers.py.

The model still decides: free text is allowed, and the end of text wherever a call is not
open. But text the format's parser would read as the start of a call must go on as a call
of one of the tools, in the format's canonical shape (``{"name": ..., "arguments": ...}``
for hermes, ``"parameters"`` for llama3_json), its arguments matching the tool's
``parameters`` schema where the tool is strict and any JSON object where it is not (as
vLLM's structural tags hold them). Everything the grammar takes parses into calls of
the tools, so a strict tool's calls reach the client valid.

Free text is one lexeme that cannot contain the opening tag (regex ``&`` and ``~``), and
the opening tag is the end of the lexeme that leads up to it: a lexeme ending in front of
the tag cannot be told from one that goes on, and llguidance's lexer takes the longest.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sarathi.entrypoints.openai_server.tool_parsers import HERMES_CLOSE, HERMES_OPEN, PYTHON_TAG
from sarathi.sampling_params import StructuredOutputsParams
from sarathi.structured_output.compiler import lark_json, validated_grammar

# The tags that a tokenizer may hold as special tokens, per format: a special token is named
# in the grammar as such (its text does not spell it).
FORMAT_TAGS: dict[str, tuple[str, ...]] = {
    "hermes": (HERMES_OPEN, HERMES_CLOSE),
    "llama3_json": (PYTHON_TAG,),
}

_ANY = "(.|\\n)"


@dataclass(frozen=True)
class ToolSchema:
    name: str
    parameters: dict[str, Any]
    strict: bool


def strict_auto_grammar(
    parser: str, tools: Sequence[ToolSchema], parallel: bool, special: Mapping[str, int]
) -> str:
    """The grammar of ``parser``'s format over ``tools``; with ``parallel`` false, at most
    one call. ``special``: the format's tags that the vocabulary holds as special tokens,
    with their ids. ValueError when a strict tool's schema is not one."""
    if parser == "hermes":
        return _hermes(tools, parallel, special)
    if parser == "llama3_json":
        return _llama3(tools, parallel, special)
    raise ValueError(f"no strict tool grammar for the tool-call format {parser!r}")


def _regex(text: str) -> str:
    """``text`` as a literal inside a Lark /regex/."""
    return "".join(c if c.isalnum() or c in "_ " else f"\\x{{{ord(c):x}}}" for c in text)


def _tag(text: str, special: Mapping[str, int]) -> str:
    """A Lark expression for ``text``: its characters, or the special token of that name."""
    literal = json.dumps(text)
    return f"({literal} | <[{special[text]}]>)" if text in special else literal


def _calls(tools: Sequence[ToolSchema], arguments_key: str, brace: str = "{") -> list[str]:
    """The rules ``call`` (a call object of one of the tools, from just after ``brace``, its
    first characters, to its ``}``) and those it uses."""
    rules = ["call: " + " | ".join(f"call_{i}" for i in range(len(tools)))]
    for i, tool in enumerate(tools):
        head = json.dumps(f'{brace}"name": {json.dumps(tool.name)}, "{arguments_key}": ')
        rules.append(f'call_{i}: {head} args_{i} "}}"')
        if tool.strict:
            # Checked alone first, so that an error names the tool, not a line of the grammar.
            try:
                validated_grammar(StructuredOutputsParams(json=tool.parameters))
            except ValueError as e:
                raise ValueError(f"the parameters of strict tool {tool.name!r}: {e}") from e
            rules.append(f"args_{i}: {lark_json(tool.parameters)}")
        else:
            rules.append(f"args_{i}: {lark_json({'type': 'object'}, closed=False)}")
    return rules


def _hermes(tools: Sequence[ToolSchema], parallel: bool, special: Mapping[str, int]) -> str:
    # <tool_call>, then the call as the hermes parser reads it: JSON on a line of its own or
    # not, up to the first </tool_call>.
    tag = _regex(HERMES_OPEN)
    opening = "TEXT_OPEN" + (
        f" | TEXT <[{special[HERMES_OPEN]}]>" if HERMES_OPEN in special else ""
    )
    start = "start: (open block)* TEXT" if parallel else "start: TEXT | open block TEXT"
    return "\n".join(
        [
            start,
            f"open: {opening}",
            f'block: "\\n"? call "\\n"? {_tag(HERMES_CLOSE, special)}',
            f"TEXT: /{_ANY}*/ & ~/{_ANY}*{tag}{_ANY}*/",
            f"TEXT_OPEN: /{_ANY}*{tag}/ & ~/{_ANY}*{tag}{_ANY}+/",
            *_calls(tools, "arguments"),
        ]
    )


@functools.cache
def _py_space() -> str:
    """Python's whitespace (what str.strip() removes, which the llama3_json parser does
    before it looks for a call's "{"), as a regex character class; found once, on first use
    (a scan of every code point takes 0.1 s)."""
    spaces = (c for c in range(sys.maxunicode + 1) if chr(c).isspace())
    return "[" + "".join(f"\\x{{{c:x}}}" for c in spaces) + "]"


def _llama3(tools: Sequence[ToolSchema], parallel: bool, special: Mapping[str, int]) -> str:
    # The parser reads the whole output as calls when, past whitespace and an optional
    # <|python_tag|>, it starts with "{": such text is the calls (";"-separated) and nothing
    # else; any other text is an answer.
    space = _py_space()
    lead = f"{space}*({_regex(PYTHON_TAG)}{space}*)?\\x{{7b}}"
    opening = "LEAD" + (
        f" | /{space}*/ <[{special[PYTHON_TAG]}]> /{space}*\\x{{7b}}/"
        if PYTHON_TAG in special
        else ""
    )
    more = ' ("; {" call)*' if parallel else ""
    return "\n".join(
        [
            f"start: TEXT | open call{more}",
            f"open: {opening}",
            f"TEXT: /{_ANY}*/ & ~/{lead}{_ANY}*/",
            f"LEAD: /{lead}/",
            # The lexeme in front of a call ends with its "{".
            *_calls(tools, "parameters", brace=""),
        ]
    )
