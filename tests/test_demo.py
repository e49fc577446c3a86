"""The embedded demo model."""

import hashlib
import os

from sarathi.transformers_utils.demo import demo_model_path


def _digest(path):
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            h.update(name.encode() + f.read())
    return h.hexdigest()


def test_demo_model_is_built_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("SARATHI_CACHE", str(tmp_path / "a"))
    a = demo_model_path()
    monkeypatch.setenv("SARATHI_CACHE", str(tmp_path / "b"))
    b = demo_model_path()
    assert a != b and _digest(a) == _digest(b)
    assert demo_model_path() == b  # cached: built once


def test_demo_tokenizer_has_a_chat_template():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_path())
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert "hi" in text and text.endswith("assistant\n")
    assert tok.decode(tok.encode("Hello, world!")) == "Hello, world!"


def test_the_demo_is_named_for_what_it_is_when_loaded_by_path(tmp_path, caplog):
    """By name or by a path to its folder (or a copy), the engine says it has random weights
    (the README's promise for every command)."""
    import logging
    import shutil

    from sarathi import LLM

    copy = tmp_path / "my-model"
    shutil.copytree(demo_model_path(), copy)
    with caplog.at_level(logging.WARNING):
        llm = LLM(str(copy))
    assert llm.engine.setup.is_demo
    assert "random weights" in caplog.text
