"""The training loop shared by ``finetune`` and the quality benchmark's pretraining.

AdamW with linear warmup then cosine decay (the paper's recipe), gradient
clipping, bf16 autocast on a GPU (fp32 master weights), checkpoints that
resume to the same state as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from adaptivocab.checkpoint import TrainState, has_checkpoint, load_checkpoint, save_checkpoint
from adaptivocab.errors import AdaptiVocabError, TrainingInterrupted
from adaptivocab.training_data import PackedData


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 8
    lr: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: 5% of the steps
    min_lr_ratio: float = 0.1  # cosine ends at lr * this
    grad_clip: float = 1.0
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on a GPU, fp32 on CPU
    save_every: int = 0  # steps between checkpoints (0: only at the end and on Ctrl-C)

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise AdaptiVocabError("--steps and --batch-size must be at least 1")
        if (
            not self.lr > 0
            or not 0 <= self.beta1 < 1
            or not 0 <= self.beta2 < 1
            or self.weight_decay < 0
        ):
            raise AdaptiVocabError("learning rate must be > 0, betas in [0, 1), weight decay >= 0")
        # Each was taken as given: a negative --save-every saved a checkpoint every step
        # (step % -1 == 0), a --min-lr-ratio above 1 made the "decay" climb past --lr, a
        # negative --warmup-steps skipped warmup, a negative --grad-clip meant no clipping.
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise AdaptiVocabError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise AdaptiVocabError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.grad_clip < math.inf:
            raise AdaptiVocabError(
                f"--grad-clip must be >= 0 (0: no clipping), got {self.grad_clip}"
            )
        if self.save_every < 0:
            raise AdaptiVocabError(
                f"--save-every must be >= 0 (0: only at the end), got {self.save_every}"
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise AdaptiVocabError(
                f"--precision must be auto, fp32 or bf16, got {self.precision!r}"
            )

    @property
    def warmup(self) -> int:
        return (
            self.warmup_steps if self.warmup_steps is not None else max(1, round(0.05 * self.steps))
        )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based).

    Linear warmup, then cosine decay to ``lr * min_lr_ratio``.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


@dataclass(frozen=True)
class TrainResult:
    steps: int
    tokens: int
    losses: tuple[float, ...]
    seconds: float  # wall time of this invocation (not of earlier, resumed-from runs)
    tokens_per_second: float
    resumed_from: int  # step the run resumed from (0 for a fresh run)


def data_fingerprint(data: PackedData) -> str:
    return hashlib.blake2b(data.sequences.numpy().tobytes(), digest_size=12).hexdigest()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise AdaptiVocabError(f"bad --device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AdaptiVocabError("--device cuda asked for but no GPU is available; use --device cpu")
    return dev


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda"
    return precision == "bf16"


def _optimizer(
    model: torch.nn.Module, names: tuple[str, ...], cfg: TrainConfig
) -> torch.optim.AdamW:
    params = dict(model.named_parameters())
    # Norm gains and biases are not decayed: pulling them to zero is not regularisation.
    decay = [params[n] for n in names if params[n].dim() >= 2]
    plain = [params[n] for n in names if params[n].dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)
    )


def train(
    model: torch.nn.Module,
    names: tuple[str, ...],
    data: PackedData,
    cfg: TrainConfig,
    device: torch.device,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    desc: str = "training",
) -> TrainResult:
    """Train the parameters ``names`` of ``model`` for ``cfg.steps`` updates.

    ``model`` is already on ``device``.
    """
    cfg.validate()
    if not names:
        raise AdaptiVocabError("nothing to train: --train selected no parameters")
    optimizer = _optimizer(model, names, cfg)
    params = dict(model.named_parameters())
    trainable = [params[n] for n in names]
    run = {**asdict(cfg), "seq_len": data.seq_len, "data": data_fingerprint(data)}
    run.pop("save_every")  # how often to save may change between sessions
    state = TrainState(step=0, position=0, tokens=0, losses=(), run=run)
    if resume and checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
        state = load_checkpoint(checkpoint_dir, model, names, optimizer, run)
    resumed_from = state.step
    step, position, tokens, losses = state.step, state.position, state.tokens, list(state.losses)
    bf16 = use_bf16(cfg.precision, device)
    model.train()

    def checkpoint() -> None:
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir,
                model,
                names,
                optimizer,
                TrainState(
                    step=step, position=position, tokens=tokens, losses=tuple(losses), run=run
                ),
            )

    t0 = time.perf_counter()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc=desc,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        while step < cfg.steps:
            batch = data.batch(cfg.seed, position, cfg.batch_size).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise AdaptiVocabError(f"loss became {value} at step {step}; lower --lr")
            step += 1
            position += cfg.batch_size
            tokens += batch.numel()
            losses.append(value)
            elapsed = time.perf_counter() - t0
            recent = losses[-20:]
            bar.set_postfix(
                loss=f"{sum(recent) / len(recent):.3f}",
                tok_s=f"{(tokens - state.tokens) / max(elapsed, 1e-9):,.0f}",
                lr=f"{lr_at(step - 1, cfg):.2e}",
            )
            bar.update(1)
            if on_step is not None:
                on_step(step, value)
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        if checkpoint_dir is None:
            raise
        checkpoint()
        raise TrainingInterrupted(
            f"interrupted at step {step}/{cfg.steps}; checkpoint saved in {checkpoint_dir}; rerun "
            "with --resume to continue"
        ) from None
    bar.close()
    checkpoint()
    elapsed = time.perf_counter() - t0
    return TrainResult(
        steps=step,
        tokens=tokens,
        losses=tuple(losses),
        seconds=elapsed,
        tokens_per_second=(tokens - state.tokens) / max(elapsed, 1e-9),
        resumed_from=resumed_from,
    )
