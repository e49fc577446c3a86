"""docs/configuration.md is generated from the config dataclasses and must stay current."""

from dataclasses import fields
from pathlib import Path

from sarathi.config import SECTION_TYPES
from sarathi.entrypoints import config_docs

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
FIX = f"regenerate it with `{config_docs.REGENERATE}` and commit the result"


def test_configuration_doc_is_current():
    assert DOC.exists(), f"docs/configuration.md is missing; {FIX}"
    current = DOC.read_text(encoding="utf-8").splitlines()
    fresh = config_docs.render().splitlines()
    if current != fresh:
        first = next((i for i, (a, b) in enumerate(zip(current, fresh)) if a != b),
                     min(len(current), len(fresh)))
        raise AssertionError(
            f"docs/configuration.md is stale (first difference at line {first + 1}); {FIX}")


def test_every_config_field_and_alias_is_documented():
    text = config_docs.render()
    for typ in SECTION_TYPES.values():
        for f in fields(typ):
            assert f"| `{f.name}` |" in text, f.name
            assert f"`--{f.name.replace('_', '-')}`" in text, f.name
            for alias in f.metadata.get("aliases", ()):
                assert f"`--{alias}`" in text, alias


def test_sampling_and_server_flags_are_documented():
    text = config_docs.render()
    for flag in ("--temperature", "--max-tokens", "--stop", "--prompt", "--host", "--port",
                 "--api-key"):
        assert f"`{flag}`" in text, flag


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    assert config_docs.main(["--check", "--out", str(stale)]) == 1
    assert config_docs.REGENERATE in capsys.readouterr().err
    assert config_docs.main(["--out", str(stale)]) == 0
    assert config_docs.main(["--check", "--out", str(stale)]) == 0
