"""Training checkpoints: tensors in safetensors, everything else in JSON (no pickle).

A checkpoint folder holds
  trainable.safetensors   the trainable parameters (fp32 master copies)
  optimizer.safetensors   AdamW moments and step counts, keyed ``<param name>::<state key>``
  rng.safetensors         torch CPU (and CUDA) generator states, as uint8 tensors
  state.json              step, data position, run config, names and fingerprints
Frozen parameters are not stored: they are reloaded from the model folder,
which the fingerprints in state.json tie the checkpoint to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptivocab.errors import AdaptiVocabError

FORMAT = "adaptivocab-train-checkpoint"
VERSION = 1
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainState:
    """Where a run stands; with the tensors it is everything a resumed run needs."""

    step: int  # optimizer updates done
    position: int  # sequences consumed (data order is a function of it and the seed)
    tokens: int  # tokens trained on
    losses: tuple[float, ...]  # one mean loss per step, for curves
    # config that must match on resume (steps, batch, lr, blocks, data fingerprint, ...)
    run: dict[str, Any]


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    folder: str | os.PathLike[str],
    model: torch.nn.Module,
    names: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
    state: TrainState,
) -> None:
    """Write the checkpoint to a temporary folder, then swap it in.

    The old checkpoint is kept until the swap.
    """
    from safetensors.torch import save_file

    path = Path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_file(
            {n: params[n].detach().float().cpu().contiguous() for n in names},
            str(tmp / "trainable.safetensors"),
        )
        opt: dict[str, torch.Tensor] = {}
        index = {id(p): n for n, p in params.items()}
        for p, st in optimizer.state.items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    opt[f"{index[id(p)]}::{key}"] = value.detach().cpu().contiguous()
        save_file(opt, str(tmp / "optimizer.safetensors"))
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "names": list(names),
            "step": state.step,
            "position": state.position,
            "tokens": state.tokens,
            "losses": list(state.losses),
            "run": state.run,
        }
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def has_checkpoint(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def load_checkpoint(
    folder: str | os.PathLike[str],
    model: torch.nn.Module,
    names: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
    run: dict[str, Any],
) -> TrainState:
    """Restore parameters, optimizer and RNG in place.

    ``run`` must match the run configuration the checkpoint was made with.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder)
    try:
        payload = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise AdaptiVocabError(f"{path} is not an adaptivocab training checkpoint")
        trainable = load_file(str(path / "trainable.safetensors"))
        opt = load_file(str(path / "optimizer.safetensors"))
        rng = load_file(str(path / "rng.safetensors"))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise AdaptiVocabError(
            f"checkpoint {path} is unreadable ({exc}); delete it or start without --resume"
        ) from exc
    if tuple(payload["names"]) != names:
        raise AdaptiVocabError(
            f"checkpoint {path} trains other parameters (different --train or model); start a new "
            "run"
        )
    diffs = sorted(k for k in set(run) | set(payload["run"]) if run.get(k) != payload["run"].get(k))
    if diffs:
        raise AdaptiVocabError(
            f"checkpoint {path} was made with different settings ({', '.join(diffs)}); use the "
            "same options or start a new run"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(trainable[n])
    sd = optimizer.state_dict()
    order = [n for group in optimizer.param_groups for n in _group_names(group, params)]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for i, n in enumerate(order):
        entry = {k.split("::", 1)[1]: v for k, v in opt.items() if k.split("::", 1)[0] == n}
        if entry:
            state[i] = entry
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
    _restore_rng(rng)
    return TrainState(
        step=int(payload["step"]),
        position=int(payload["position"]),
        tokens=int(payload["tokens"]),
        losses=tuple(float(x) for x in payload["losses"]),
        run=payload["run"],
    )


def _group_names(group: dict[str, Any], params: dict[str, torch.nn.Parameter]) -> list[str]:
    index = {id(p): n for n, p in params.items()}
    return [index[id(p)] for p in group["params"]]
