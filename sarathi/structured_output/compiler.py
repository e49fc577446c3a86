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
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import llguidance
from llguidance.gbnf_to_lark import gbnf_to_lark

from sarathi.sampling_params import StructuredOutputsParams

if TYPE_CHECKING:  # a typing-only name of llguidance's stubs
    from llguidance._lib import JsonCompileOptions

T = TypeVar("T")

_JSON_STYLE: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


# llguidance's parser reads a schema's JSON at most about 125 levels deep, so refusing deeper
# ones loses nothing; they are refused before _closed_objects copies them (recursively: a
# schema hundreds of levels deep, sent as a string, exhausted the stack).
MAX_SCHEMA_DEPTH = 128


def grammar_text(spec: StructuredOutputsParams) -> str:
    """The llguidance grammar of ``spec``; ValueError when it is not well formed."""
    kind = spec.kind
    if kind in ("json", "json_object"):
        schema = _checked_schema({"type": "object"} if spec.json_object else spec.json)
        if not spec.json_object:
            schema = _closed_objects(schema)
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_STYLE)
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.regex or "")
    if kind == "choice":
        lark = "start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in spec.choice or ())
        return llguidance.LLMatcher.grammar_from_lark(lark)
    grammar = spec.grammar or ""
    # Lark never writes "::=", so only GBNF has rules to count here.
    if len(_GBNF_RULE.findall(grammar)) > MAX_GBNF_RULES:
        raise ValueError(
            f"a GBNF grammar takes at most {MAX_GBNF_RULES} rules (converting more takes "
            f"seconds to minutes); write it in Lark, which takes up to {MAX_GRAMMAR_RULES}"
        )
    try:
        lark = _as_lark(grammar)
    except Exception as e:  # the converter raises bare Exceptions on GBNF it cannot read
        raise ValueError(f"the grammar is neither Lark nor GBNF: {e}") from e
    if len(_LARK_DEFINITION.findall(lark)) > MAX_GRAMMAR_RULES:
        raise ValueError(f"the grammar defines more than {MAX_GRAMMAR_RULES} rules and terminals")
    return llguidance.LLMatcher.grammar_from_lark(lark)


def _checked_schema(schema: Any) -> Any:
    """``schema`` (a JSON schema, or its JSON text) as data; ValueError when it is not one
    or nests too deep."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"the JSON schema is not valid JSON: {e}") from e
    if not isinstance(schema, (dict, bool)):
        raise ValueError("a JSON schema must be an object")
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the JSON schema nests more than {MAX_SCHEMA_DEPTH} levels deep")
    return schema


def lark_json(schema: dict[str, Any], closed: bool = True) -> str:
    """A Lark rule body (``%json {...}``) for JSON that matches ``schema``, written in the
    style of a json constraint; ``closed``: its objects take only the properties they list,
    as a json constraint's do (an open ``{"type": "object"}`` takes any object).
    ValueError when ``schema`` nests too deep."""
    schema = _checked_schema(schema)
    if closed:
        schema = _closed_objects(schema)
    # On one line, as a Lark rule ends with its line. The style is llguidance's x-guidance
    # key, which a schema's own overrides, as it overrides a json constraint's style.
    return "%json " + json.dumps({"x-guidance": _JSON_STYLE, **schema})


# A GBNF rule definition ("root ::= ...", names of letters, digits, "_" and "-"); Lark never
# writes "::=". llguidance's own test (any_to_lark: a line "start:" means Lark) took GBNF with a
# rule named start ("start ::= ...") for Lark, and Lark's "?start:" / "!start:" for GBNF.
_GBNF_RULE = re.compile(r"^[ \t]*[\w-]+[ \t]*::=", re.MULTILINE)
_GBNF_START_RULE = re.compile(r"^[ \t]*start[ \t]*::=", re.MULTILINE)
# GBNF's string literals, character classes and comments (where "start" is not a rule name),
# or the name "start". A literal or class left open runs to the end rather than failing, so a
# scan never starts again inside one: linear in the grammar, however hostile.
_GBNF_START = re.compile(
    r'"(?:\\.|[^"\\])*"?|\[(?:\\.|[^\]\\])*\]?|#[^\n]*|(?<![\w-])start(?![\w-])'
)


def _as_lark(grammar: str) -> str:
    """``grammar`` in Lark: GBNF converted, Lark as it is. llguidance's GBNF converter is
    Python holding the GIL, and its time grows with the square of a chain of rules (1,000
    rules 0.55 s, 4,000 10 s, 30,000 never ended): every other request waited on it, so GBNF
    takes at most MAX_GBNF_RULES rules (``grammar_text``), and larger grammars are written in
    Lark."""
    if _GBNF_RULE.search(grammar) is None:
        return grammar
    if _GBNF_START_RULE.search(grammar) is not None:
        # The converter names GBNF's root rule "start", Lark's entry point, and refuses a
        # grammar with its own rule of that name ("Rule 'start' already exists"): rename it.
        used = set(re.findall(r"[\w-]+", grammar))
        name = "start_"
        while name in used:
            name += "_"
        grammar = _GBNF_START.sub(lambda m: name if m.group() == "start" else m.group(), grammar)
    return gbnf_to_lark(grammar)


# llguidance numbers a grammar's symbols in 16 bits (it refuses more, with a panic), and the
# rules it resolves recursively are bounded with them, so the compile stack below suffices.
MAX_GRAMMAR_RULES = 65_000
# The most rules a GBNF grammar may have: llguidance converts GBNF to Lark (``_as_lark``).
MAX_GBNF_RULES = 1000
_LARK_DEFINITION = re.compile(r"^[ \t]*[?!]?[A-Za-z_]\w*(?:\.-?\d+)?[ \t]*:", re.MULTILINE)


# Where a schema nests other schemas: one, a list of them, or a map of names to them. Values
# under other keywords (const, enum, default, examples, ...) are data, never touched.
_ONE = ("additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems", "additionalItems", "items")  # fmt: skip
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _subschemas(root: Any) -> list[dict[str, Any]]:
    """Every schema object in ``root`` (itself included), parents before children."""
    out: list[dict[str, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue  # true/false schemas
        out.append(node)
        for key in _ONE:
            if isinstance(node.get(key), dict):
                stack.append(node[key])
        for key in _LIST:
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        for key in _MAP:
            if isinstance(node.get(key), dict):
                stack.extend(node[key].values())
    return out


def _depth(value: Any) -> int:
    """How deep JSON data ``value`` nests (1 for an empty object), found without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend(
                (v, depth + 1) for v in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def _is_object(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" or "properties" in node


def _closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` where objects without ``additionalProperties`` get ``false``.

    An object joined by ``allOf`` (``allOf: [{"$ref": "#/$defs/Base"}]`` beside more
    properties is how generators write an extended model) is closed as a whole: each part
    lists only its share of the properties, so closing the parts one by one would forbid
    each other's. The parts (and what they reference) stay open, and the schema holding the
    ``allOf`` takes every part's property names where all of them are known."""
    schema = copy.deepcopy(schema)
    nodes = _subschemas(schema)
    holders = [n for n in nodes if isinstance(n.get("allOf"), list)]
    parts: set[int] = set()
    for holder in holders:
        parts |= _joined(schema, holder["allOf"])
    for holder in holders:
        if id(holder) not in parts:  # an allOf inside a part closes with its holder
            _close_joined(schema, holder)
    open_ones = parts | {id(h) for h in holders}
    for node in nodes:
        if _is_object(node) and "additionalProperties" not in node and id(node) not in open_ones:
            node["additionalProperties"] = False
    return schema


def _joined(root: Any, members: list[Any]) -> set[int]:
    """The ids of the schemas an ``allOf`` joins: its members, what their local references
    point to, and the members of allOfs among them."""
    ids: set[int] = set()
    pending = list(members)
    while pending:
        member = pending.pop()
        if not isinstance(member, dict) or id(member) in ids:
            continue
        ids.add(id(member))
        target = _local_ref(root, member.get("$ref"))
        if target is not None:
            pending.append(target)
        if isinstance(member.get("allOf"), list):
            pending.extend(member["allOf"])
    return ids


def _close_joined(root: Any, holder: dict[str, Any]) -> None:
    """Close the object ``holder``'s allOf joins, where the holder says nothing of extra
    properties and every part lists its own: the holder takes the parts' property names (as
    ``true``: each part's schema for it still applies) and ``additionalProperties: false``.
    A part that leaves extra properties open, or whose properties cannot all be known
    (anyOf, patternProperties, a reference outside the schema, ...), leaves it open."""
    if "additionalProperties" in holder or "patternProperties" in holder:
        return
    names: list[str] = []
    objects = _is_object(holder)
    pending = list(holder["allOf"])
    seen: set[int] = set()
    while pending:
        part = pending.pop(0)
        if part is True or part == {}:
            continue
        if not isinstance(part, dict) or id(part) in seen:
            return
        seen.add(id(part))
        if "$ref" in part:
            target = _local_ref(root, part["$ref"])
            if target is None or set(part) - {"$ref", "description", "title"}:
                return
            pending.append(target)
            continue
        if part.get("additionalProperties", False) is not False or any(
            k in part for k in ("patternProperties", "anyOf", "oneOf", "not", "if")
        ):
            return
        objects = objects or _is_object(part)
        names += [n for n in part.get("properties", {}) if n not in names]
        if isinstance(part.get("allOf"), list):
            pending.extend(part["allOf"])
    props = holder.get("properties", {})
    if not objects or not isinstance(props, dict):
        return
    holder["properties"] = props
    for name in names:
        props.setdefault(name, True)
    holder["additionalProperties"] = False


def _local_ref(root: Any, ref: Any) -> Any:
    """The part of ``root`` a local reference (``#``, ``#/$defs/Name``) names, or None."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        return None
    node = root
    for token in ref[2:].split("/") if ref != "#" else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def validated_grammar(
    spec: StructuredOutputsParams, vocabulary: llguidance.LLTokenizer | None = None
) -> str:
    """``spec``'s grammar text; ValueError with llguidance's message when it is invalid or too
    complex. Without a vocabulary only what holds for every vocabulary is checked (enough for
    a regular expression, so a CLI can refuse one before the model loads)."""
    text = grammar_text(spec)
    error = llguidance.LLMatcher.validate_grammar(text, vocabulary)
    if error:
        raise ValueError(f"invalid {_NAMES[spec.kind]}: {error.strip()}")
    return text


def compile_grammar(
    spec: StructuredOutputsParams, vocabulary: llguidance.LLTokenizer
) -> llguidance.LLMatcher:
    """A matcher at the start of ``spec``'s grammar, to be copied for each sequence.
    ValueError with llguidance's message when the grammar is invalid or too complex."""

    def compile_() -> llguidance.LLMatcher:
        text = validated_grammar(spec, vocabulary)
        matcher = llguidance.LLMatcher(vocabulary, text, log_level=0)
        if matcher.is_error():
            raise ValueError(f"invalid {_NAMES[spec.kind]}: {matcher.get_error().strip()}")
        # The first mask builds the lexer's states, which every copy of the matcher shares:
        # built here (the server compiles in a worker thread; llguidance releases the GIL),
        # not by the engine loop's first step with the grammar, where `a{900000}` held every
        # running sequence for 0.4 s, and a client sending such regexes stalled them all.
        # What fails, fails again on the engine's copies, where it is reported.
        matcher.deep_copy().compute_bitmask()
        return matcher

    return _on_deep_stack(compile_)


# llguidance checks a grammar against the vocabulary recursively, in native code: a schema
# chained through ~1,100 $refs, or a Lark grammar of ~10,000 chained rules (requests of
# 100-200 KB), overflowed a thread's default 8 MiB stack and killed the process. On a
# 512 MiB stack (virtual memory, touched only as deep as the grammar goes) llguidance
# reaches its own limits first and says so, a clean error: "schema too large" for a chain of
# 45,000 $refs, its symbol limit for 120,000 chained rules (MAX_GRAMMAR_RULES refuses those
# sooner); 100,000 chained rules still overflowed 256 MiB.
_DEEP_STACK = 512 << 20
_DEEP_STACK_LOCK = threading.Lock()


def _on_deep_stack(fn: Callable[[], T]) -> T:
    """``fn()`` run on a thread of its own with a ``_DEEP_STACK`` stack; its result, or its
    exception raised here."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread, raised there
            failure.append(e)

    # The stack size is the process's setting for threads started next: set for this one
    # only (the lock keeps two compiles from resetting each other's).
    with _DEEP_STACK_LOCK:
        previous = threading.stack_size(_DEEP_STACK)
        try:
            thread = threading.Thread(target=run, name="grammar-compile", daemon=True)
            thread.start()
        finally:
            threading.stack_size(previous)
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


_NAMES = {
    "json": "JSON schema",
    "json_object": "JSON object constraint",
    "regex": "regular expression",
    "choice": "choice",
    "grammar": "grammar",
}
