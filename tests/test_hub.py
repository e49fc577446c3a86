"""Hub ids (vLLM's --revision, --tokenizer-revision, --download-dir, --hf-token): what reaches the hub
client, and local folders left as they are. The hub is not reachable from the tests, so
``snapshot_download`` is replaced by one that records its call and returns a local folder."""

from __future__ import annotations

import logging
from typing import Any

import huggingface_hub
import pytest

from sarathi import LLM, SamplingParams
from sarathi.transformers_utils.hub import HubOptions, resolve_model_path


@pytest.fixture
def hub(monkeypatch, tiny_models):
    """Hub ids resolve to the tiny Llama folder; each call's arguments are recorded."""
    calls: list[dict[str, Any]] = []

    def snapshot(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return tiny_models["llama"]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    return calls


def test_a_hub_id_is_fetched_at_its_revision_into_the_download_dir(hub, tmp_path):
    path = resolve_model_path("owner/name", "model", HubOptions("v1.0", str(tmp_path)))
    assert path and hub[-1]["repo_id"] == "owner/name"
    assert hub[-1]["revision"] == "v1.0" and hub[-1]["cache_dir"] == str(tmp_path)
    resolve_model_path("owner/name")
    assert hub[-1]["revision"] is None and hub[-1]["cache_dir"] is None


def test_a_hub_failure_names_the_revision(monkeypatch):
    def fail(repo_id: str, **kwargs: Any) -> str:
        raise OSError("Revision Not Found")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(ValueError, match=r"'owner/name' .* at revision 'nope' \(OSError"):
        resolve_model_path("owner/name", "model", HubOptions("nope"))


def test_a_local_folder_with_a_revision_is_warned_about(tiny_models, caplog, hub):
    with caplog.at_level(logging.WARNING, logger="sarathi.transformers_utils.hub"):
        assert (
            resolve_model_path(tiny_models["llama"], "model", HubOptions("main"))
            == tiny_models["llama"]
        )
    assert "has no hub revision: revision 'main' is unused" in caplog.text
    assert not hub


def test_the_engine_passes_its_revisions_and_download_dir(hub, tiny_models, tmp_path):
    llm = LLM(
        "owner/model",
        revision="abc123",
        tokenizer="owner/tokenizer",
        tokenizer_revision="t1",
        download_dir=str(tmp_path),
        hf_token="hf_secret",
        max_num_seqs=2,
    )
    try:
        asked = {c["repo_id"]: (c["revision"], c["cache_dir"], c["token"]) for c in hub}
        assert asked == {
            "owner/model": ("abc123", str(tmp_path), "hf_secret"),
            "owner/tokenizer": ("t1", str(tmp_path), "hf_secret"),
        }
        # The token is the config's, and no repr of it (a log line, an error) shows it.
        assert llm.config.model.hf_token == "hf_secret"
        assert "hf_secret" not in repr(llm.config)
        (out,) = llm.generate("Hello", SamplingParams(max_tokens=2, ignore_eos=True))
        assert len(out.outputs[0].token_ids) == 2
    finally:
        llm.engine.shutdown()


def test_the_flags_are_taken(hub, tmp_path):
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    argv = ["serve", "owner/model", "--revision", "r", "--tokenizer-revision", "t",
            "--download_dir", str(tmp_path), "--hf-token", "hf_x"]  # fmt: skip
    mc = config_from_args(build_parser().parse_args(argv)).model
    assert (mc.revision, mc.tokenizer_revision, mc.download_dir) == ("r", "t", str(tmp_path))
    assert mc.hf_token == "hf_x"
