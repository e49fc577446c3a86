"""From a request's constraint to a grammar llguidance validated against the vocabulary.

JSON is written in one fixed style, ``{"key": value, "key2": [1, 2]}`` (the separators of
Python's ``json.dumps``), with no free whitespace: it is how models write JSON anyway, and
a model left free to add whitespace can fill its whole budget with it. Objects of a JSON
schema take only the properties they list unless they say otherwise
(``additionalProperties``), as in OpenAI's strict mode and vLLM's default engine.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import llguidance
from llguidance.gbnf_to_lark import any_to_lark

from sarathi.sampling_params import StructuredOutputs

if TYPE_CHECKING:  # a typing-only name of llguidance's stubs
    from llguidance._lib import JsonCompileOptions

_JSON_STYLE: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


def grammar_text(spec: StructuredOutputs) -> str:
    """The llguidance grammar of ``spec``; ValueError when it is not well formed."""
    kind = spec.kind
    if kind in ("json", "json_object"):
        schema: Any = {"type": "object"} if spec.json_object else spec.json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ValueError(f"the JSON schema is not valid JSON: {e}") from e
        if not isinstance(schema, (dict, bool)):
            raise ValueError("a JSON schema must be an object")
        if not spec.json_object:
            schema = _closed_objects(schema)
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_STYLE)
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.regex or "")
    if kind == "choice":
        lark = "start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in spec.choice or ())
        return llguidance.LLMatcher.grammar_from_lark(lark)
    try:
        lark = any_to_lark(spec.grammar or "")
    except Exception as e:  # the converter raises bare Exceptions on GBNF it cannot read
        raise ValueError(f"the grammar is neither Lark nor GBNF: {e}") from e
    return llguidance.LLMatcher.grammar_from_lark(lark)


# Where a schema nests other schemas: one, a list of them, or a map of names to them. Values
# under other keywords (const, enum, default, examples, ...) are data, never touched.
_ONE = ("additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems", "additionalItems", "items")  # fmt: skip
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` where objects without ``additionalProperties`` get ``false``."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue  # true/false schemas
        if (node.get("type") == "object" or "properties" in node) and (
            "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
        for key in _ONE:
            if isinstance(node.get(key), dict):
                stack.append(node[key])
        for key in _LIST:
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        for key in _MAP:
            if isinstance(node.get(key), dict):
                stack.extend(node[key].values())
    return schema


def compile_grammar(
    spec: StructuredOutputs, vocabulary: llguidance.LLTokenizer
) -> llguidance.LLMatcher:
    """A matcher at the start of ``spec``'s grammar, to be copied for each sequence.
    ValueError with llguidance's message when the grammar is invalid or too complex."""
    text = grammar_text(spec)
    error = llguidance.LLMatcher.validate_grammar(text, vocabulary)
    if error:
        raise ValueError(f"invalid {_NAMES[spec.kind]}: {error.strip()}")
    matcher = llguidance.LLMatcher(vocabulary, text, log_level=0)
    if matcher.is_error():
        raise ValueError(f"invalid {_NAMES[spec.kind]}: {matcher.get_error().strip()}")
    return matcher


_NAMES = {
    "json": "JSON schema",
    "json_object": "JSON object constraint",
    "regex": "regular expression",
    "choice": "choice",
    "grammar": "grammar",
}
