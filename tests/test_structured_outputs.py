"""Structured outputs: constrained decoding makes even random-weight models write valid text.

References: Python's json / re modules for validity, a dense mask for apply_token_masks,
the eager path (no overlap) for the overlapped one where masks are computed after the
forward is queued.
"""

import json
import re
import time
from importlib import resources

import numpy as np
import pytest
import torch

from sarathi import LLM, SamplingParams
from sarathi.core.scheduler_output import TokenMasks
from sarathi.engine.llm_engine import RequestError
from sarathi.model_executor.layers.sampler import apply_token_masks
from sarathi.sampling_params import StructuredOutputsParams

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"},
        "kind": {"enum": ["a", "b", "c"]},
        "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3},
    },
    "required": ["name", "age", "ok", "kind"],
}


def _check_schema(text: str) -> bool:
    value = json.loads(text)
    assert set(value) <= set(SCHEMA["properties"]) and {"name", "age", "ok", "kind"} <= set(value)
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 120
    assert isinstance(value["ok"], bool) and value["kind"] in "abc"
    assert all(t in ("x", "y") for t in value.get("tags", []))
    return True


@pytest.fixture(scope="module")
def llm():
    return LLM(model="demo", overlap_scheduling=True)


CASES = [
    (StructuredOutputsParams(json=SCHEMA), _check_schema),
    (StructuredOutputsParams(json=json.dumps(SCHEMA)), _check_schema),
    (StructuredOutputsParams(json_object=True), lambda t: isinstance(json.loads(t), dict)),
    (
        StructuredOutputsParams(regex=r"[0-9]{3}-[a-z]{2,4}"),
        lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t),
    ),
    (StructuredOutputsParams(choice=["yes", "no", "maybe"]), lambda t: t in ("yes", "no", "maybe")),
    (
        StructuredOutputsParams(grammar='root ::= "(" ("a" | "b" | "c") ")" (" " "(" [0-9] ")")?'),
        lambda t: re.fullmatch(r"\((a|b|c)\)( \([0-9]\))?", t),
    ),
    (
        StructuredOutputsParams(grammar='start: "<" WORD ">"\nWORD: /[a-z]{1,5}/'),
        lambda t: re.fullmatch(r"<[a-z]{1,5}>", t),
    ),
]


@pytest.mark.parametrize("spec,valid", CASES, ids=[c[0].kind for c in CASES])
def test_random_model_output_is_valid(llm, spec, valid):
    prompts = ["hello world", "the scheduler keeps", "a b c", "what is"]
    params = [
        SamplingParams(temperature=t, max_tokens=200, structured_outputs=spec, seed=i)
        for i, t in enumerate([0, 1.0, 0.7, 1.3])
    ]
    for out in llm.generate(prompts, params, use_tqdm=False):
        c = out.outputs[0]
        assert c.finish_reason == "stop", c.text
        assert valid(c.text), c.text
    assert not llm.engine.structured  # every matcher released


@pytest.mark.parametrize(
    "grammar,pattern",
    [
        # GBNF with a rule named start (llama.cpp's and xgrammar's root is "root"): it was
        # taken for Lark (a line "start" then ":"), and the converter refuses the name.
        ('root ::= start "!"\nstart ::= "a" | "start" | [s-t] # start', r"(a|start|[s-t])!"),
        # Lark's inlined and kept start rules: they were taken for GBNF.
        ('?start: pair\npair: "x" | "y" | "z"', r"[xyz]"),
        ('!start: "x" | "y"', r"[xy]"),
    ],
    ids=["gbnf-start-rule", "lark-?start", "lark-!start"],
)
def test_grammar_dialect_is_read_from_its_rules(llm, grammar, pattern):
    spec = StructuredOutputsParams(grammar=grammar)
    params = SamplingParams(n=3, temperature=1.0, seed=0, max_tokens=20, structured_outputs=spec)
    out = llm.generate(["x"], params, use_tqdm=False)[0]
    for c in out.outputs:
        assert c.finish_reason == "stop" and re.fullmatch(pattern, c.text), c.text


def test_n_sequences_each_follow_the_grammar(llm):
    spec = StructuredOutputsParams(json=SCHEMA)
    out = llm.generate(
        ["x"],
        SamplingParams(n=4, temperature=1.0, max_tokens=200, structured_outputs=spec),
        use_tqdm=False,
    )[0]
    assert len(out.outputs) == 4
    for c in out.outputs:
        _check_schema(c.text)


def test_property_order_is_the_schema_s_own(llm):
    """The output writes properties in its schema's order (a model that reasons before it
    answers depends on it), also after a schema of the same properties in another order was
    compiled: the compiled grammars are cached, and their key must keep that order."""
    answer = {"type": "integer", "minimum": 0, "maximum": 9}
    orders = (("reasoning", "answer"), ("answer", "reasoning"))
    for names in orders:
        props = {n: answer if n == "answer" else {"type": "boolean"} for n in names}
        schema = {"type": "object", "properties": props, "required": ["answer", "reasoning"]}
        out = llm.generate(
            ["x"],
            SamplingParams(
                max_tokens=40, structured_outputs=StructuredOutputsParams(json=schema)
            ),
            use_tqdm=False,
        )[0]
        assert list(json.loads(out.outputs[0].text)) == list(names)


def test_overlapped_masks_match_the_eager_path():
    """With overlap the masks of step N+1 are computed after its forward is queued; the
    tokens must be those of the path that computes them first."""
    specs = [StructuredOutputsParams(json=SCHEMA), None, StructuredOutputsParams(regex=r"[a-f]{4,9}")]
    prompts = ["hello world", "the scheduler", "a b c", "what", "batch", "x y"] * 3
    params = [
        SamplingParams(
            temperature=(i % 2) * 0.9, max_tokens=48, structured_outputs=specs[i % 3], seed=i
        )
        for i in range(len(prompts))
    ]
    texts = []
    for overlap in (False, True):
        llm = LLM(model="demo", overlap_scheduling=overlap, max_num_seqs=8)
        outs = llm.generate(prompts, params, use_tqdm=False)
        texts.append([(o.outputs[0].token_ids, o.outputs[0].finish_reason) for o in outs])
        llm.engine.shutdown()
    assert texts[0] == texts[1]


def test_constraints_mix_with_other_sampling_options(llm):
    """Penalties (which collect the previous step first), logit bias and stop strings."""
    spec = StructuredOutputsParams(choice=["alpha", "beta", "gamma"])
    tok = llm.get_tokenizer()
    favour = tok.encode("gamma", add_special_tokens=False)[0]
    outs = llm.generate(
        ["p", "q"],
        [
            SamplingParams(temperature=0.8, repetition_penalty=1.3, structured_outputs=spec),
            SamplingParams(temperature=0, logit_bias={favour: 100}, structured_outputs=spec),
        ],
        use_tqdm=False,
    )
    assert outs[0].outputs[0].text in ("alpha", "beta", "gamma")
    assert outs[1].outputs[0].text == "gamma"


@pytest.mark.parametrize(
    "spec,words",
    [
        (StructuredOutputsParams(json={"type": "nonsense"}), "JSON schema"),
        (StructuredOutputsParams(json="{not json"), "not valid JSON"),
        (StructuredOutputsParams(regex="a(b"), "regular expression"),
        (StructuredOutputsParams(grammar="root ::= ( unclosed"), "grammar"),
    ],
)
def test_invalid_constraints_are_refused(llm, spec, words):
    with pytest.raises(RequestError, match=words):
        llm.engine.add_request("x", SamplingParams(structured_outputs=spec))
    assert not llm.engine.requests


def test_a_grammar_failing_mid_way_ends_with_an_error(llm):
    """`a{1000000}` compiles, then llguidance gives up on its first token ("too many
    expressions"). The choice used to end "stop" with text the constraint did not allow
    (or, on a later request, with no text at all): it ends "error", with the reason."""
    spec = StructuredOutputsParams(regex="a{1000000}")
    for n in (1, 2):  # the second: matchers copied from the grammar cached by the first
        out = llm.generate(["x"], SamplingParams(n=n, max_tokens=8, structured_outputs=spec))[0]
        assert [c.finish_reason for c in out.outputs] == ["error"] * n
        assert out.error is not None and "output constraint failed" in out.error
        # Each choice names llguidance's reason. A matcher whose mask failed is stopped as
        # well, and was reported as complete ("asked for more tokens"), which it never was.
        assert "too many expressions" in out.error and "min_tokens" not in out.error
    assert not llm.engine.structured  # the matchers are released


def test_a_grammar_s_first_mask_is_built_when_it_is_compiled(llm):
    """The first mask builds the lexer's states (0.4 s for `a{900000}`). Built by the
    engine's first step with the grammar, it held every running sequence that long, and a
    client sending such regexes stalled them all; the server compiles in a worker thread,
    and the first mask is built there."""
    engine = llm.engine
    spec = StructuredOutputsParams(regex="a{900000}")
    engine.structured.compile(spec)  # what the server does before it adds the request
    engine.add_request("x", SamplingParams(max_tokens=1, structured_outputs=spec))
    t0 = time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
    assert time.perf_counter() - t0 < 0.15
    assert not engine.structured


def test_a_constraint_complete_before_min_tokens_ends_with_an_error(llm):
    """A choice is complete after its one token; min_tokens then bans the end of text, the
    grammar's only next token, so nothing valid can follow (docs/structured-outputs.md, "A
    limit"). The row is empty and its draw is token 0, which is the demo model's end of
    text: the matcher took it and the output ended "stop"."""
    assert llm.get_tokenizer().eos_token_id == 0
    spec = StructuredOutputsParams(choice=["a"])
    params = SamplingParams(max_tokens=8, min_tokens=4, structured_outputs=spec)
    out = llm.generate(["x"], params, use_tqdm=False)[0]
    assert out.outputs[0].finish_reason == "error" and out.outputs[0].text == "a"
    assert out.error is not None and "output constraint failed" in out.error
    assert "min_tokens" in out.error
    assert not llm.engine.structured  # the matcher is released


def test_spec_sets_exactly_one_kind():
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams()
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams(regex="a", choice=["a"])
    with pytest.raises(ValueError, match="choice"):
        StructuredOutputsParams(choice=[])
    assert StructuredOutputsParams(json={}).kind == "json"


def test_vllms_whitespace_and_properties_flags_are_taken_and_its_other_options_refused(llm):
    # vLLM's constructor arguments were TypeErrors here while the server took them. The two
    # flags have one answer (no free whitespace, only the schema's properties): same output.
    spec = StructuredOutputsParams(json=SCHEMA)
    flagged = StructuredOutputsParams(
        json=SCHEMA, disable_any_whitespace=True, disable_additional_properties=True
    )
    greedy = dict(temperature=0, max_tokens=60)
    outs = llm.generate(["x", "x"], [SamplingParams(**greedy, structured_outputs=s)
                                     for s in (spec, flagged)], use_tqdm=False)  # fmt: skip
    assert outs[0].outputs[0].text == outs[1].outputs[0].text
    assert _check_schema(outs[1].outputs[0].text)
    for name, why in (("whitespace_pattern", "whitespace"), ("structural_tag", "no tags")):
        with pytest.raises(ValueError, match=f"{name} is not supported \\(.*{why}"):
            StructuredOutputsParams(json=SCHEMA, **{name: " "})


def test_abort_releases_the_matcher(llm):
    spec = StructuredOutputsParams(json_object=True)
    llm.engine.add_request("x", SamplingParams(structured_outputs=spec), request_id="gone")
    assert llm.engine.structured
    llm.engine.abort_request("gone")
    assert not llm.engine.structured


def test_apply_token_masks_matches_a_dense_mask():
    gen = torch.Generator().manual_seed(0)
    vocab, words = 100, 3  # 96 bits: the last 4 columns are the model's padded rows
    logits = torch.randn(5, vocab, generator=gen)
    bits = np.random.default_rng(0).integers(-(2**31), 2**31, size=(2, words), dtype=np.int64)
    bits = bits.astype(np.int32)
    rows = np.array([1, 3])
    dense = torch.ones(5, vocab, dtype=torch.bool)
    for i, r in enumerate(rows):
        allowed = np.unpackbits(bits[i].view(np.uint8), bitorder="little").astype(bool)
        dense[r] = False
        dense[r, : words * 32] = torch.from_numpy(allowed[:vocab])
    expect = logits.masked_fill(~dense, float("-inf"))
    got = apply_token_masks(logits.clone(), TokenMasks(rows, bits))
    assert torch.equal(got, expect)


def test_without_tokenizer_constraints_are_refused(tiny_models):
    llm = LLM(tiny_models["llama"], skip_tokenizer_init=True)
    with pytest.raises(RequestError, match="tokenizer"):
        llm.engine.add_request(
            [5, 6], SamplingParams(structured_outputs=StructuredOutputsParams(regex="a"))
        )


# -- AdaptiVocab ------------------------------------------------------------------------------
def _docs() -> list[str]:
    text = resources.files("sarathi.transformers_utils").joinpath("demo_corpus.txt").read_text()
    return [p for p in text.split("\n\n") if p.strip()] * 4


@pytest.fixture(scope="module")
def patched_llm(tmp_path_factory):
    from adaptivocab import BuildConfig, PatchTokenizer, build_patch
    from adaptivocab.base import load_base_tokenizer
    from sarathi.transformers_utils.demo import demo_model_path

    base = load_base_tokenizer(demo_model_path())
    patch, _ = build_patch(base, _docs(), BuildConfig(num_tokens=40, max_ngram=3, progress=False))
    folder = tmp_path_factory.mktemp("patch")
    PatchTokenizer(base, patch).save_pretrained(folder)
    return LLM(model="demo", patch_tokenizer=str(folder), overlap_scheduling=True)


def test_grammar_sees_the_patched_vocabulary(patched_llm):
    """Each n-gram id is one step of the grammar, spelling its pieces' text."""
    tok = patched_llm.get_tokenizer()
    structured = patched_llm.engine.structured
    vocab = structured.vocabulary
    ngrams = tok.ngram_pieces
    assert ngrams
    for tid, pieces in list(ngrams.items())[:20]:
        assert vocab.decode_bytes([tid]) == b"".join(vocab.decode_bytes([p]) for p in pieces)
    # A choice that is exactly one n-gram's text: the n-gram is allowed at the start, and
    # with a bias towards it the whole answer is that single token.
    tid = next(t for t, p in ngrams.items() if tok.decode([t]).strip() and len(p) >= 2)
    text = tok.decode([tid])
    spec = StructuredOutputsParams(choice=[text, text + "!"])
    out = patched_llm.generate(
        ["x"],
        SamplingParams(
            temperature=0, max_tokens=20, logit_bias={tid: 100}, structured_outputs=spec
        ),
        use_tqdm=False,
    )[0].outputs[0]
    assert out.text == text and out.token_ids[0] == tid


def test_patched_vocabulary_output_is_valid(patched_llm):
    params = [
        SamplingParams(
            temperature=t, max_tokens=200, seed=i, structured_outputs=StructuredOutputsParams(json=SCHEMA)
        )
        for i, t in enumerate([0, 1.0, 1.0])
    ]
    for out in patched_llm.generate(["the cache", "a", "b"], params, use_tqdm=False):
        assert out.outputs[0].finish_reason == "stop"
        _check_schema(out.outputs[0].text)


def test_only_subschemas_are_closed_never_data():
    """Objects get additionalProperties false where the schema leaves it open; a property
    named like a keyword, const/enum/default values and examples are data and stay as
    they are."""
    from sarathi.structured_output.compiler import _closed_objects

    schema = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "kind": {"const": {"type": "object"}},
            "tags": {"type": "array", "items": {"properties": {"a": {"type": "string"}}}},
            "either": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        },
        "default": {"properties": {}},
        "$defs": {"Inner": {"type": "object", "additionalProperties": True}},
    }
    closed = _closed_objects(schema)
    props = closed["properties"]
    assert closed["additionalProperties"] is False
    assert "additionalProperties" not in props  # the map of properties is not a schema
    assert props["properties"]["additionalProperties"] is False
    assert props["kind"] == {"const": {"type": "object"}}
    assert props["tags"]["items"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False
    assert closed["default"] == {"properties": {}}
    assert closed["$defs"]["Inner"]["additionalProperties"] is True
    assert schema["properties"]["kind"] == {"const": {"type": "object"}}  # a copy


def test_allof_parts_are_joined_not_closed_apart():
    """An object built with allOf (a $ref to a base model plus its own properties) is
    satisfiable: closing each part alone would forbid the other parts' properties."""
    import llguidance

    from sarathi.structured_output.compiler import _JSON_STYLE, _closed_objects

    schema = {
        "$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        "allOf": [{"$ref": "#/$defs/Base"}],
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["id", "name"],
    }
    closed = _closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["id"] is True  # the part's own schema still applies
    assert "additionalProperties" not in closed["$defs"]["Base"]
    grammar = llguidance.LLMatcher.grammar_from_json_schema(closed, defaults=_JSON_STYLE)
    assert not llguidance.LLMatcher.validate_grammar(grammar)

    jsonschema = pytest.importorskip("jsonschema")
    inline = {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}},
                         "required": ["a"]},
                        {"properties": {"b": {"type": "string"}}, "required": ["b"]}]}
    closed = _closed_objects(inline)
    jsonschema.validate({"a": 1, "b": "x"}, closed)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"a": 1, "b": "x", "c": 0}, closed)  # closed as a whole
    opened = {"allOf": [{"properties": {"a": {}}, "additionalProperties": True}]}
    assert "additionalProperties" not in _closed_objects(opened)  # a part left it open


_DEEP = """
import sys
from sarathi import LLM, SamplingParams
from sarathi.sampling_params import StructuredOutputsParams
depth = int(sys.argv[1])
defs = {f"N{i}": {"type": "array", "items": {"$ref": f"#/$defs/N{i + 1}"},
                  "minItems": 1, "maxItems": 1} for i in range(depth)}
defs[f"N{depth}"] = {"type": "integer"}
rules = "\\n".join(f'r{i}: "[" r{i + 1} "]"' for i in range(depth)) + f'\\nr{depth}: "0"'
llm = LLM("demo")
for spec in (StructuredOutputsParams(json={"$defs": defs, "$ref": "#/$defs/N0"}),
             StructuredOutputsParams(grammar="start: r0\\n" + rules)):
    (out,) = llm.generate(["x"], SamplingParams(max_tokens=8, structured_outputs=spec),
                          use_tqdm=False)
    assert out.outputs[0].text.startswith("[" * 8) or out.error, out
print("OK")
"""


def test_grammars_chained_thousands_deep_do_not_crash_the_process():
    # llguidance checks grammars recursively in native code: a schema chained through
    # ~1,100 $refs, or a Lark grammar of ~10,000 chained rules, overflowed the default
    # thread stack (a segfault, the whole server gone). Run apart, so that a regression
    # fails this test instead of killing the test run.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _DEEP, "12000"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-2000:]


def test_grammars_with_more_rules_than_llguidance_takes_are_refused(llm):
    rules = "\n".join(f'r{i}: "a"' for i in range(70_000))
    spec = StructuredOutputsParams(grammar="start: r0\n" + rules)
    (out,) = llm.generate(["x"], SamplingParams(max_tokens=2, structured_outputs=spec))
    assert out.outputs[0].finish_reason == "error" and "more than 65000 rules" in out.error


def test_gbnf_grammars_are_held_to_the_rules_their_converter_takes_in_time():
    """llguidance's GBNF converter is Python holding the GIL, quadratic in a chain of rules:
    4,000 took 10 s and 30,000 never ended, while every other request waited. Past
    MAX_GBNF_RULES a GBNF grammar is refused at once, pointing to Lark."""
    from sarathi.structured_output.compiler import MAX_GBNF_RULES, grammar_text

    def chain(n: int) -> str:
        rules = "\n".join(f'r{i} ::= "x{i}" r{i + 1} | "y"' for i in range(n))
        return f'root ::= r0\n{rules}\nr{n} ::= "z"'

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=f"at most {MAX_GBNF_RULES} rules.*Lark"):
        grammar_text(StructuredOutputsParams(grammar=chain(30_000)))
    assert time.perf_counter() - t0 < 1
    assert grammar_text(StructuredOutputsParams(grammar=chain(MAX_GBNF_RULES - 2)))
