"""Finding a model folder: local paths, the embedded demo model, or the Hugging Face hub."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEMO_NAMES = ("demo", "", None)


@dataclass(frozen=True)
class HubOptions:
    """Where and how a hub id is fetched: vLLM's --revision (or --tokenizer-revision),
    --download-dir and --hf-token; None: the main branch, the Hugging Face cache, $HF_TOKEN."""

    revision: str | None = None
    download_dir: str | None = None
    token: str | None = None


MAIN_BRANCH = HubOptions()  # the hub's defaults


def resolve_model_path(name: str | None, what: str = "model", hub: HubOptions = MAIN_BRANCH) -> str:
    """Local folder for ``name``; downloads from the hub only when ``name`` is not local,
    as ``hub`` says. ``what`` names the folder in errors ("model", "tokenizer")."""
    revision = hub.revision
    if name in DEMO_NAMES:
        from sarathi.transformers_utils.demo import demo_model_path

        _local(what, "demo", revision)
        return demo_model_path()
    assert name is not None
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        _local(what, name, revision)
        return expanded
    if os.path.exists(expanded):
        raise ValueError(f"{name!r} is a file; pass a Hugging Face {what} folder")
    # Hub ids are "name" or "owner/name" ("gpt2", "Qwen/Qwen3-0.6B").
    looks_like_id = name.count("/") <= 1 and not name.startswith((".", "/", "~"))
    if not looks_like_id:
        raise ValueError(f"{what} folder {name!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            name,
            revision=revision,
            cache_dir=os.path.expanduser(hub.download_dir) if hub.download_dir else None,
            token=hub.token,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as e:  # any hub failure becomes one clear message
        at = f" at revision {revision!r}" if revision else ""
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        hint = ", or use --model demo." if what == "model" else "."
        raise ValueError(
            f"{name!r} is not a local folder and could not be fetched from the Hugging Face hub"
            f"{at} ({why}). Download the {what} elsewhere and pass its folder{hint}"
        ) from e


def _local(what: str, name: str, revision: str | None) -> None:
    """A local folder has no hub revision: one given with it is warned about."""
    if revision is not None:
        logger.warning(
            "%s %r is a local folder, which has no hub revision: revision %r is unused",
            what,
            name,
            revision,
        )
