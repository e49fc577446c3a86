"""Finding a model folder: local paths, the embedded demo model, or the Hugging Face hub."""

from __future__ import annotations

import os

DEMO_NAMES = ("demo", "", None)


def resolve_model_path(name: str | None, what: str = "model") -> str:
    """Local folder for ``name``; downloads from the hub only when ``name`` is not local.
    ``what`` names the folder in errors ("model", "tokenizer")."""
    if name in DEMO_NAMES:
        from sarathi.transformers_utils.demo import demo_model_path

        return demo_model_path()
    assert name is not None
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
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
            name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
        )
    except Exception as e:  # any hub failure becomes one clear message
        raise ValueError(
            f"{name!r} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Download the "
            f"{what} elsewhere and pass its folder"
            + (", or use --model demo." if what == "model" else ".")
        ) from e
