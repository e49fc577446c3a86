"""patch-model: rewrite a Hugging Face model folder with patched embedding rows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adaptivocab.embeddings import (
    DEFAULT_EXP_BASE,
    check_model_tokenizer,
    check_vocab,
    find_embedding_names,
    patch_embeddings,
)
from adaptivocab.errors import AdaptiVocabError
from adaptivocab.fsutil import atomic_output_dir, check_output_dir
from adaptivocab.patch import PATCH_FILE, STATS_FILE, VocabPatch
from adaptivocab.tokenizer import PatchTokenizer

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
META_FILE = "adaptivocab_model.json"
DEFAULT_SEQ_LEN = 768  # the AdaptiVocab paper's fine-tuning length


def _weight_files(model_dir: Path) -> tuple[list[str], dict[str, str], dict[str, Any] | None]:
    """Shard file names, tensor name -> shard, and the index JSON (None for one file)."""
    if (model_dir / INDEX).is_file():
        try:
            index = json.loads((model_dir / INDEX).read_text(encoding="utf-8"))
            weight_map = dict(index["weight_map"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AdaptiVocabError(f"{model_dir / INDEX} is corrupt: {exc}") from exc
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise AdaptiVocabError(f"shards listed in {INDEX} are missing: {missing[:3]}")
        for shard in shards:  # a damaged shard fails here, not mid-write as a traceback
            _tensor_names(model_dir / shard)
        return shards, weight_map, index
    if (model_dir / SINGLE).is_file():
        names = _tensor_names(model_dir / SINGLE)
        return [SINGLE], {n: SINGLE for n in names}, None
    # Said by patch-model, finetune and eval alike, so it names none of them.
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    hint = (
        f"; its PyTorch pickle weights ({', '.join(pickles[:2])}) are never loaded, as pickle "
        "can run code: convert them to safetensors first"
        if pickles
        else ""
    )
    raise AdaptiVocabError(
        f"{model_dir} has no {SINGLE} or {INDEX}; adaptivocab reads Hugging Face safetensors "
        f"folders only{hint}"
    )


def _tensor_names(path: Path) -> list[str]:
    """Tensor names in a safetensors file, reading its header only (which also checks that
    the file is as long as the header says: a truncated download fails here)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return list(fh.keys())
    # SafetensorError (a bad or truncated header) derives from Exception only.
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise AdaptiVocabError(f"{path} is not a readable safetensors file: {exc}") from exc


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """config.json of a Hugging Face model folder as a dict, or AdaptiVocabError."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise AdaptiVocabError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaptiVocabError(f"{path} is corrupt: {exc}") from exc
    if not isinstance(config, dict):
        raise AdaptiVocabError(f"{path} is corrupt: not a JSON object")
    return config


def model_context(config: dict[str, Any]) -> int | None:
    """Positions the model was trained on, from its config.json (None when it does not say)."""
    for cfg in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def fit_seq_len(model_dir: str | os.PathLike[str], seq_len: int | None) -> int:
    """``seq_len`` checked against the model's context; None is the default length, cut to
    the context when that is shorter. A longer one is refused: a learned position table
    (GPT-2's) has no row past it (an IndexError deep in the forward), and a rotary model was
    never trained there, so its loss and bits per byte would mean little."""
    context = model_context(read_model_config(Path(model_dir)))
    if seq_len is None:
        return DEFAULT_SEQ_LEN if context is None else min(DEFAULT_SEQ_LEN, context)
    if context is not None and seq_len > context:
        raise AdaptiVocabError(
            f"--seq-len {seq_len} is longer than the model's context ({context} positions in "
            f"its config.json); pass --seq-len {context} or less"
        )
    return seq_len


def list_weight_files(
    model_dir: str | os.PathLike[str],
) -> tuple[list[str], dict[str, str], dict[str, Any] | None]:
    """Public face of the shard lookup, for other writers of model folders (finetune)."""
    return _weight_files(Path(model_dir))


def patch_model_folder(
    model_dir: str | os.PathLike[str],
    patch_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    init: str = "exp",
    exp_base: float = DEFAULT_EXP_BASE,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out``: the model with swapped rows re-initialised, plus the patch tokenizer."""
    from safetensors.torch import load_file, save_file

    model_path = Path(model_dir)
    config = read_model_config(model_path)
    check_output_dir(out, overwrite)
    tokenizer = PatchTokenizer.from_pretrained(patch_dir)
    patched = (model_path / PATCH_FILE).is_file()
    # A patched folder's swapped rows hold its own patch's n-grams: re-initialising only
    # another patch's rows would leave those in place (and build new rows from them).
    if patched and dict(VocabPatch.load(model_path).ngrams) != dict(tokenizer.ngram_pieces):
        raise AdaptiVocabError(
            f"{model_path} was patched with a different patch tokenizer; pass the base model folder"
        )
    if not patched:
        check_model_tokenizer(model_path, tokenizer.base_tokenizer)
    shards, weight_map, index = _weight_files(model_path)
    embed_key, head_key = find_embedding_names(list(weight_map))
    # Hugging Face ties the head to the embedding on load when asked to, even
    # if the file also holds an lm_head tensor, so the flag decides.
    tied = bool(config.get("tie_word_embeddings", False)) or head_key is None
    changed = {embed_key} | ({head_key} if head_key else set())
    tensors: dict[str, Any] = {}
    for shard in {weight_map[k] for k in changed}:
        loaded = load_file(str(model_path / shard))
        tensors.update({k: loaded[k] for k in changed if k in loaded})
    embed = tensors[embed_key]
    check_vocab(embed.shape[0], len(tokenizer))
    cfg_vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if cfg_vocab is not None and int(cfg_vocab) != embed.shape[0]:
        raise AdaptiVocabError(
            f"config.json says vocab_size {cfg_vocab} but the embedding has {embed.shape[0]} rows"
        )
    new_embed, new_head = patch_embeddings(
        embed,
        None if head_key is None else tensors[head_key],
        tokenizer,
        init,
        exp_base,
        seed,
        tied=tied,
    )
    replaced = {embed_key: new_embed}
    if head_key is not None and new_head is not None:
        replaced[head_key] = new_head.clone() if tied else new_head
    with atomic_output_dir(out, overwrite) as tmp:
        for item in model_path.iterdir():
            if (
                item.is_file()
                and not item.name.endswith(".safetensors")
                and item.name not in (INDEX, PATCH_FILE, STATS_FILE)
            ):
                shutil.copy2(item, tmp / item.name)
        for shard in tqdm(
            shards, desc="writing shards", unit="shard", disable=not progress, leave=False
        ):
            if not any(weight_map[k] == shard for k in replaced):
                shutil.copy2(model_path / shard, tmp / shard)
                continue
            data = load_file(str(model_path / shard))
            for k, v in replaced.items():
                if k in data:
                    data[k] = v.contiguous()
            save_file(data, str(tmp / shard), metadata={"format": "pt"})
        if index is not None:
            (tmp / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
        tokenizer.save_pretrained(tmp)
        meta = {
            "base_model": str(model_path),
            "init": init,
            "exp_base": exp_base,
            "seed": seed,
            "tied": tied,
            "embed_key": embed_key,
            "lm_head_key": head_key,
            "swapped_ids": len(tokenizer.ngram_pieces),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta
