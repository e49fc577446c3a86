"""Build a model and fill it from a Hugging Face folder of safetensors files.

Weights are read with safetensors only (never pickle). The model is created on the meta
device first so no memory is spent on a random initialisation that would be overwritten.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open

from sarathi.model_executor.kernel_switches import KernelSwitches
from sarathi.model_executor.model_shape import ModelShape
from sarathi.model_executor.models import MODEL_REGISTRY
from sarathi.model_executor.models.llama import LlamaForCausalLM
from sarathi.model_executor.parallel import TensorSlice, TPGroup

if TYPE_CHECKING:
    from adaptivocab import PatchTokenizer

# A checkpoint tensor's name and the tensor, or (lazy) its safetensors slice handle, a type
# safetensors does not export.
CheckpointItem = tuple[str, Any]

# Tensors some checkpoints carry that are recomputed here.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def weight_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(path, n) for n in names]
    else:
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        bins = glob.glob(os.path.join(path, "*.bin")) + glob.glob(os.path.join(path, "*.pt"))
        hint = (
            (
                " It has PyTorch pickle files, which are never loaded here for safety: convert "
                "them to safetensors first."
            )
            if bins
            else ""
        )
        raise ValueError(f"no *.safetensors weights in {path!r}.{hint}")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"weight files listed in the index are missing: {missing}")
    return files


def iter_checkpoint(path: str, lazy: bool = False) -> Iterator[CheckpointItem]:
    """Yield (name, tensor) for every tensor of the folder's checkpoint, on the CPU.

    ``lazy``: yield safetensors slice handles instead, so a tensor-parallel rank reads only
    its part of each tensor from disk (``load_weights`` accepts both).
    """
    for file in weight_files(path):
        # A damaged file (a cut download, a Git LFS pointer left by a clone without git-lfs)
        # is a ValueError, which the command line says in one line, naming the file.
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 - a safe_open handle has keys() but no __iter__
                    yield name, (f.get_slice(name) if lazy else f.get_tensor(name))
        except SafetensorError as e:
            raise ValueError(f"cannot read the weights file {file!r}: {e}{_lfs_hint(file)}") from e


def _lfs_hint(file: str) -> str:
    """A hint when ``file`` is a Git LFS pointer (a small text file) instead of the weights."""
    with open(file, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        return " (it is a Git LFS pointer: fetch the weights with `git lfs pull`)"
    return ""


def build_model(
    shape: ModelShape, dtype: torch.dtype, device: torch.device, tp: TPGroup | None = None
) -> LlamaForCausalLM:
    """The model on ``device``, its kernel switches resolved for it (once, here)."""
    cls = MODEL_REGISTRY[shape.architecture]
    kernels = KernelSwitches.resolve(device)
    with torch.device("meta"):
        model = cls(shape, tp if tp is not None and tp.world_size > 1 else None, kernels)
    model = model.to(dtype).to_empty(device=device)
    if shape.tie_word_embeddings:  # to_empty gives each name its own storage: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def load_weights(model: LlamaForCausalLM, weights: Iterable[CheckpointItem]) -> None:
    """Copy checkpoint tensors into ``model``; every parameter must be covered exactly."""
    params = dict(model.named_parameters())
    covered: dict[str, int] = {name: 0 for name in params}
    tied = model.shape.tie_word_embeddings
    for name, tensor in weights:
        if name.endswith(_IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
            continue
        target, shard = name, None
        for frag, (fused, idx) in model.packed.items():
            if f".{frag}." in name:
                target, shard = name.replace(f".{frag}.", f".{fused}."), (fused, idx)
                break
        param = params.get(target)
        if param is None:
            raise ValueError(
                f"checkpoint tensor {name!r} has no place in "
                f"{model.shape.architecture}; is this the right architecture?"
            )
        if shard is None:
            dest = param.data
        else:
            sizes = model.shard_sizes(shard[0])
            start = sum(sizes[: shard[1]])
            dest = param.data[start : start + sizes[shard[1]]]
        part = model.tp_slice(target, None if shard is None else shard[1])
        if part is not None and part.length < dest.shape[part.dim]:
            # The last rank's vocabulary slice is short: its padding rows stay zero.
            dest.narrow(part.dim, part.length, dest.shape[part.dim] - part.length).zero_()
            dest = dest.narrow(part.dim, 0, part.length)
        dest.copy_(_read_part(name, tensor, part, tuple(dest.shape)))
        covered[target] += 1
    expected = {n: (3 if "qkv_proj" in n else 2 if "gate_up_proj" in n else 1) for n in params}
    missing = [n for n in params if covered[n] < expected[n]]
    if missing:
        raise ValueError(
            f"checkpoint lacks weights for {len(missing)} parameters, e.g. {missing[:3]}"
        )


def _read_part(
    name: str, tensor: Any, part: TensorSlice | None, expected: tuple[int, ...]
) -> torch.Tensor:
    """This rank's part of a checkpoint tensor (a tensor or a lazy safetensors slice)."""
    full = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else tuple(tensor.get_shape())
    want = (
        expected
        if part is None
        else tuple(part.full if d == part.dim else n for d, n in enumerate(expected))
    )
    if full != want:
        raise ValueError(f"checkpoint tensor {name!r} has shape {full}, the model expects {want}")
    if part is None:
        return tensor if isinstance(tensor, torch.Tensor) else tensor[:]
    if isinstance(tensor, torch.Tensor):
        return tensor.narrow(part.dim, part.start, part.length)
    index = [slice(None)] * len(full)
    index[part.dim] = slice(part.start, part.start + part.length)
    return tensor[tuple(index)]


def patch_checkpoint(
    weights: Iterable[tuple[str, torch.Tensor]],
    patch_tokenizer: PatchTokenizer,
    init: str,
    tied: bool,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the checkpoint with AdaptiVocab's swapped embedding / LM-head rows initialised.

    Every other tensor streams through untouched; only the two vocabulary matrices are held
    back until both are seen.
    """
    from adaptivocab.embeddings import patch_state_dict_rows  # what adaptivocab loads lazily

    held: dict[str, torch.Tensor] = {}
    for name, tensor in weights:
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            held[name] = tensor
        else:
            yield name, tensor
    if not held:
        raise ValueError("the checkpoint has no embedding matrix to patch")
    yield from patch_state_dict_rows(
        held, patch_tokenizer, init=init, tie_word_embeddings=tied
    ).items()
