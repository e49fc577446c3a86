"""Loading a Hugging Face causal LM for training or scoring, and writing it back.

The written folder has the layout ``patch-model`` writes (the engine serves
it directly): the source folder's files, its shards under the same names, the
patch tokenizer files and adaptivocab_model.json. Shards holding no changed
tensor are copied byte for byte and changed shards keep every unchanged
tensor as read from disk, so frozen weights are bit-identical by construction.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from adaptivocab.embeddings import (
    DEFAULT_EXP_BASE,
    check_model_tokenizer,
    check_vocab,
    patch_embeddings,
)
from adaptivocab.errors import AdaptiVocabError
from adaptivocab.fsutil import atomic_output_dir
from adaptivocab.model_io import INDEX, META_FILE, list_weight_files, read_model_config
from adaptivocab.patch import PATCH_FILE, VocabPatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel  # fp32, on CPU
    source: Path
    patched_here: bool  # swapped rows were initialised at load (the folder held the base model)
    tied: bool


def _is_patch_tokenizer(tokenizer: Any) -> bool:
    return hasattr(tokenizer, "ngram_pieces") and hasattr(tokenizer, "removed_ids")


def load_causal_lm(
    model_dir: str | os.PathLike[str],
    tokenizer: Any = None,
    init: str = "exp",
    exp_base: float = DEFAULT_EXP_BASE,
    seed: int = 0,
    progress: bool = True,
) -> LoadedModel:
    """Load ``model_dir`` in fp32; ``progress=False`` (the CLI's --quiet) hides transformers'
    own "Loading weights" bar.

    With a PatchTokenizer, patch its rows here unless the folder already is patched.
    """
    path = Path(model_dir)
    read_model_config(path)
    # A clear error for missing or unreadable weights, before transformers' own.
    list_weight_files(path)
    if _is_patch_tokenizer(tokenizer) and not (path / PATCH_FILE).is_file():
        check_model_tokenizer(path, tokenizer.base_tokenizer)  # said before the weights load
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # transformers draws its bar whatever its caller asked for; switched off around the load
    # only, and back on only if it was on.
    hide_bar = not progress and hf_logging.is_progress_bar_enabled()
    if hide_bar:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AdaptiVocabError(f"cannot load model {path}: {first}") from exc
    finally:
        if hide_bar:
            hf_logging.enable_progress_bar()
    # fp32 master weights; bf16 -> fp32 -> bf16 is exact, so frozen tensors survive the round trip.
    model = model.float()
    embed = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    tied = head_module is None or head_module.weight is embed
    patched_here = False
    if tokenizer is not None and _is_patch_tokenizer(tokenizer):
        check_vocab(embed.shape[0], len(tokenizer))
        if (path / PATCH_FILE).is_file():
            if dict(VocabPatch.load(path).ngrams) != dict(tokenizer.ngram_pieces):
                raise AdaptiVocabError(
                    f"{path} was patched with a different patch tokenizer; pass that one or the "
                    "base model folder"
                )
        else:
            new_embed, new_head = patch_embeddings(
                embed.detach(),
                None if tied else head_module.weight.detach(),
                tokenizer,
                init,
                exp_base,
                seed,
                tied=tied,
            )
            with torch.no_grad():
                embed.copy_(new_embed)
                if not tied and new_head is not None:
                    head_module.weight.copy_(new_head)
            patched_here = True
    return LoadedModel(model=model, source=path, patched_here=patched_here, tied=tied)


def changed_tensor_names(model: torch.nn.Module, param_names: set[str]) -> set[str]:
    """State-dict names that alias the given parameters (a tied head has two names, one storage)."""
    params = dict(model.named_parameters())
    ptrs = {params[n].data_ptr() for n in param_names}
    return {name for name, t in model.state_dict().items() if t.data_ptr() in ptrs}


def write_model_folder(
    loaded: LoadedModel,
    changed_params: set[str],
    tokenizer: Any,
    meta: dict[str, Any],
    out: str | os.PathLike[str],
    overwrite: bool = False,
) -> None:
    """Write ``out`` atomically.

    It holds the source folder with the changed tensors replaced, plus the tokenizer.
    """
    from safetensors.torch import load_file, save_file

    shards, weight_map, index = list_weight_files(loaded.source)
    if loaded.patched_here:
        changed_params = changed_params | {
            n
            for n, p in loaded.model.named_parameters()
            if p is loaded.model.get_input_embeddings().weight
            or p is getattr(loaded.model.get_output_embeddings(), "weight", None)
        }
    changed = changed_tensor_names(loaded.model, changed_params)
    state = loaded.model.state_dict()
    missing = [n for n in weight_map if n in changed and n not in state]
    if missing:
        raise AdaptiVocabError(
            f"the model's tensors do not match the folder's names (e.g. {missing[0]}); cannot "
            "write it back"
        )
    source_meta: dict[str, Any] = {}
    if (loaded.source / META_FILE).is_file():
        source_meta = json.loads((loaded.source / META_FILE).read_text(encoding="utf-8"))
    with atomic_output_dir(out, overwrite) as tmp:
        for item in loaded.source.iterdir():
            if item.is_file() and not item.name.endswith(".safetensors") and item.name != INDEX:
                shutil.copy2(item, tmp / item.name)
        for shard in shards:
            names = [n for n, s in weight_map.items() if s == shard]
            if not any(n in changed for n in names):
                shutil.copy2(loaded.source / shard, tmp / shard)
                continue
            data = load_file(str(loaded.source / shard))
            for n in names:
                if n in changed:
                    data[n] = (
                        state[n].detach().to(dtype=data[n].dtype, device="cpu").contiguous().clone()
                    )
            save_file(data, str(tmp / shard), metadata={"format": "pt"})
        if index is not None:
            (tmp / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(
            json.dumps({**source_meta, **meta}, indent=1), encoding="utf-8"
        )
