"""``adaptivocab finetune``: recover a patched model's quality by light training on domain text.

A run: load the model (patching its swapped rows with ``init`` if the folder
holds the base model), freeze all but the chosen blocks, train on the corpus's
90% training split, write a servable model folder atomically. Checkpoints go
to ``<out>.checkpoint`` (or ``checkpoint_dir``) and are removed once the
output folder is written, unless kept.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptivocab.checkpoint import has_checkpoint
from adaptivocab.embeddings import DEFAULT_EXP_BASE
from adaptivocab.errors import AdaptiVocabError
from adaptivocab.trainer import TrainConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FinetuneJob:
    model_dir: str
    patch_dir: str
    corpus: tuple[str, ...]
    out: str
    train_blocks: tuple[str, ...] = ("embed", "lm_head", "first", "last")
    steps: int | None = None  # None: one pass over the training split
    seq_len: int | None = None  # None: 768, or the model's context if shorter
    # steps replaced at run time
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1))
    init: str = "exp"
    exp_base: float = DEFAULT_EXP_BASE
    device: str = "auto"
    checkpoint_dir: str | None = None
    resume: bool = False
    keep_checkpoint: bool = False
    overwrite: bool = False
    progress: bool = True

    @property
    def checkpoint_path(self) -> Path:
        return (
            Path(self.checkpoint_dir)
            if self.checkpoint_dir
            else Path(f"{Path(self.out)}.checkpoint")
        )


def run_finetune(job: FinetuneJob, log: Any = print) -> dict[str, Any]:
    """Run ``job`` end to end; returns the summary stored in the output's adaptivocab_model.json."""
    from dataclasses import asdict, replace

    from adaptivocab.corpus import load_corpus
    from adaptivocab.fsutil import check_output_dir
    from adaptivocab.hf_model import load_causal_lm, write_model_folder
    from adaptivocab.model_io import fit_seq_len
    from adaptivocab.tokenizer import PatchTokenizer
    from adaptivocab.trainable import select_trainable
    from adaptivocab.trainer import resolve_device, train
    from adaptivocab.training_data import pack_documents

    check_output_dir(job.out, job.overwrite)
    seq_len = fit_seq_len(job.model_dir, job.seq_len)
    device = resolve_device(job.device)
    ckpt = job.checkpoint_path
    if has_checkpoint(ckpt) and not job.resume:
        raise AdaptiVocabError(
            f"a checkpoint exists in {ckpt}; pass --resume to continue it or delete it to start "
            "over"
        )
    tokenizer = PatchTokenizer.from_pretrained(job.patch_dir)
    corpus = load_corpus(job.corpus)
    data = pack_documents(tokenizer, corpus.train, seq_len, progress=job.progress)
    steps = (
        job.steps
        if job.steps is not None
        else max(1, math.ceil(data.num_sequences / job.train.batch_size))
    )
    cfg = replace(job.train, steps=steps)
    cfg.validate()
    loaded = load_causal_lm(
        job.model_dir,
        tokenizer,
        init=job.init,
        exp_base=job.exp_base,
        seed=cfg.seed,
        progress=job.progress,
    )
    selection = select_trainable(loaded.model, job.train_blocks)
    if selection.note:
        log(f"note: {selection.note}")
    if loaded.patched_here:
        log(
            f"note: {job.model_dir} holds the base model; swapped rows initialised with --init "
            f"{job.init}"
        )
    if job.resume and not has_checkpoint(ckpt):
        log(f"note: no checkpoint in {ckpt}; starting from step 0")
    total = sum(p.numel() for p in loaded.model.parameters())
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    log(
        f"training {trainable:,} of {total:,} parameters ({', '.join(job.train_blocks)}) for "
        f"{steps} steps of {cfg.batch_size} x {seq_len} tokens "
        f"({data.num_sequences} sequences) on {device}"
    )
    # Moved as an nn.Module: transformers types PreTrainedModel.to as the unbound Module.to.
    model: torch.nn.Module = loaded.model
    model = model.to(device)
    result = train(
        model,
        selection.names,
        data,
        cfg,
        device,
        checkpoint_dir=ckpt,
        resume=job.resume,
        progress=job.progress,
        desc="finetune",
    )
    model.cpu()
    meta: dict[str, Any] = {
        "finetune": {
            "base_model": str(job.model_dir),
            "patch_tokenizer": str(job.patch_dir),
            "corpus": [str(c) for c in job.corpus],
            "train_blocks": list(job.train_blocks),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "tied": selection.tied,
            "init_at_load": job.init if loaded.patched_here else None,
            "seq_len": seq_len,
            "config": asdict(cfg),
            "steps": result.steps,
            "tokens": result.tokens,
            "final_loss": sum(result.losses[-20:]) / max(1, len(result.losses[-20:])),
            "resumed_from_step": result.resumed_from,
            "device": str(device),
        }
    }
    if loaded.patched_here:
        meta.update(
            init=job.init,
            exp_base=job.exp_base,
            tied=selection.tied,
            swapped_ids=len(tokenizer.ngram_pieces),
        )
    write_model_folder(loaded, set(selection.names), tokenizer, meta, job.out, job.overwrite)
    if not job.keep_checkpoint:
        shutil.rmtree(ckpt, ignore_errors=True)
    return meta["finetune"]
