"""Which parameters a fine-tuning run trains (``--train``), and tied embeddings.

Blocks: ``embed`` (input embeddings), ``lm_head``, ``first`` / ``last``
(the first / last transformer layer), ``norm`` (the final norm), ``all``.
The paper trains embed, lm_head, first and last: the swapped rows live in the
two matrices, and the first and last layers adapt to reading and predicting
multi-piece tokens.

Tied embeddings: a tied model has one matrix serving as embedding and LM head.
If either ``embed`` or ``lm_head`` is chosen, that one matrix is trained (so
both roles change, and the output stays tied); there is no way to train one
role and freeze the other without untying the model, which would change its
architecture and size, so we do not do it silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from adaptivocab.errors import AdaptiVocabError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

BLOCKS = ("embed", "lm_head", "first", "last", "norm", "all")
DEFAULT_TRAIN = "embed,lm_head,first,last"


def parse_train_spec(text: str) -> tuple[str, ...]:
    """``"embed,lm_head"`` -> ("embed", "lm_head"); unknown names are a clear error."""
    parts = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not parts:
        raise AdaptiVocabError(f"--train is empty; choose from {', '.join(BLOCKS)}")
    bad = [p for p in parts if p not in BLOCKS]
    if bad:
        raise AdaptiVocabError(
            f"unknown --train block(s) {', '.join(bad)}; choose from {', '.join(BLOCKS)}"
        )
    return parts


@dataclass(frozen=True)
class Selection:
    names: tuple[str, ...]  # trainable parameter names, as in model.named_parameters()
    tied: bool
    note: str | None  # said to the user when the tie widens the choice


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer layers of a causal LM (Llama family: model.model.layers)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    inner = getattr(model, "model", None)
    if inner is not None and isinstance(getattr(inner, "layers", None), torch.nn.ModuleList):
        return inner.layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise AdaptiVocabError(
        "cannot find the transformer layers of this model; use --train embed,lm_head or all"
    )


def _final_norm(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "model", None)
    norm = getattr(inner, "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise AdaptiVocabError("cannot find the final norm of this model; drop 'norm' from --train")
    return norm


def select_trainable(model: PreTrainedModel, blocks: tuple[str, ...]) -> Selection:
    """Set ``requires_grad`` on the chosen blocks only and return their parameter names."""
    embed = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    head = None if head_module is None else head_module.weight
    tied = head is None or head is embed
    chosen: set[int] = set()
    if "all" in blocks:
        chosen = {id(p) for p in model.parameters()}
    else:
        if "embed" in blocks:
            chosen.add(id(embed))
        if "lm_head" in blocks:
            chosen.add(id(embed if head is None else head))
        layers = decoder_layers(model) if {"first", "last"} & set(blocks) else None
        if "first" in blocks and layers is not None:
            chosen |= {id(p) for p in layers[0].parameters()}
        if "last" in blocks and layers is not None:
            chosen |= {id(p) for p in layers[len(layers) - 1].parameters()}
        if "norm" in blocks:
            chosen |= {id(p) for p in _final_norm(model).parameters()}
    note = None
    if tied and "all" not in blocks and ("embed" in blocks) != ("lm_head" in blocks):
        note = (
            "tied embeddings: the shared embedding/LM-head matrix is trained, so both roles change"
        )
    names: list[str] = []
    for name, p in model.named_parameters():  # a tied matrix appears once
        p.requires_grad_(id(p) in chosen)
        if id(p) in chosen:
            names.append(name)
    return Selection(names=tuple(names), tied=tied, note=note)
