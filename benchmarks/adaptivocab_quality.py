"""AdaptiVocab quality: does fine-tuning bring a patched model back? (bits per byte)

No pretrained weights can be downloaded here, so the experiment makes one:
  1. pretrain a small Llama-architecture model from scratch with the Mistral
     tokenizer on one corpus (90% hash split), recording held-out bits per byte
     along the way to show it has flattened;
  2. build a PatchTokenizer on the same training split (adaptivocab's builder);
  3. patch the model with each init (exp, mean, random) and score it;
  4. fine-tune each patched model on the same token budget (embed, LM head,
     first and last layer; AdamW, warmup + cosine) and score again; as a
     control the base model gets the same fine-tuning with its own tokenizer.
Scores are bits per byte on the held-out 10% (adaptivocab.eval), so base and
patched tokenizers are compared on the same bytes.

    python benchmarks/adaptivocab_quality.py --preset cpu --out /tmp/avq
    python benchmarks/adaptivocab_quality.py --preset gpu --corpora DIR --out OUT

Every stage writes into --out and is reused if present, so a run cut off by a
time limit continues where it stopped when started again with the same --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from common import print_table, run_info, write_json  # noqa: E402

from adaptivocab import AdaptiVocabError, BuildConfig, PatchTokenizer, build_patch  # noqa: E402
from adaptivocab.base import load_base_tokenizer  # noqa: E402
from adaptivocab.corpus import load_corpus  # noqa: E402
from adaptivocab.eval import bits_per_byte, take_bytes  # noqa: E402
from adaptivocab.hf_model import load_causal_lm, write_model_folder  # noqa: E402
from adaptivocab.model_io import patch_model_folder  # noqa: E402
from adaptivocab.stats import measure_reduction  # noqa: E402
from adaptivocab.trainable import parse_train_spec, select_trainable  # noqa: E402
from adaptivocab.trainer import TrainConfig, resolve_device, train  # noqa: E402
from adaptivocab.training_data import PackedData, pack_documents  # noqa: E402

INITS = ("exp", "mean", "random")


@dataclass(frozen=True)
class Preset:
    corpus: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    seq_len: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    num_tokens: int  # swapped tokens
    eval_bytes: int  # held-out bytes scored for the table
    curve_bytes: int  # held-out bytes scored along pretraining
    curve_points: int
    train_bytes: int | None = (
        None  # training text packed for pretraining/fine-tuning (None: all); the builder sees all
    )


PRESETS = {
    # ~9M parameters (8.2M of them the 32k-row embedding and LM head); ~25 min on 2 CPU cores.
    # 600 steps = 1.2M tokens (1.5 epochs of the 3 MB packed): held-out bpb has flattened by then.
    "cpu": Preset(
        corpus="python-docs.txt.gz",
        hidden=128,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate=384,
        seq_len=256,
        pretrain_steps=600,
        pretrain_batch=8,
        pretrain_lr=3e-3,
        finetune_steps=120,
        finetune_batch=8,
        finetune_lr=5e-4,
        num_tokens=4000,
        eval_bytes=40_000,
        curve_bytes=15_000,
        curve_points=6,
        train_bytes=3_000_000,
    ),
    # ~124M parameters, bf16 autocast: 2.4 min of pretraining, 4.4 min in all on one H100
    # (results/adaptivocab_quality-gpu_h100.md; 700 fine-tuning steps recover to +4% bpb).
    "gpu": Preset(
        corpus="linux-docs.txt.gz",
        hidden=768,
        layers=12,
        heads=12,
        kv_heads=4,
        intermediate=2048,
        seq_len=768,
        pretrain_steps=1000,
        pretrain_batch=32,
        pretrain_lr=1e-3,
        finetune_steps=700,
        finetune_batch=16,
        finetune_lr=5e-4,
        num_tokens=10000,
        eval_bytes=1_000_000,
        curve_bytes=200_000,
        curve_points=10,
    ),
}


def new_model(p: Preset) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads,
        max_position_embeddings=max(1024, p.seq_len),
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        rope_theta=10000.0,
    )
    return LlamaForCausalLM(cfg)


def pretrain(
    p: Preset,
    base_tok: Any,
    data: PackedData,
    curve_texts: list[str],
    out: Path,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    folder = out / "base-model"
    record = out / "pretrain.json"
    if (folder / "config.json").is_file() and record.is_file():
        print(f"reusing {folder}")
        return json.loads(record.read_text())
    model = new_model(p).to(device)
    # Checkpointed, so a run stopped by a time limit resumes pretraining instead of restarting it.
    cfg = TrainConfig(
        steps=p.pretrain_steps,
        batch_size=p.pretrain_batch,
        lr=p.pretrain_lr,
        seed=0,
        save_every=max(1, p.pretrain_steps // 10),
    )
    names = tuple(n for n, _ in model.named_parameters())
    every = max(1, p.pretrain_steps // p.curve_points)
    curve_file = out / "pretrain-curve.json"
    curve: list[dict[str, float]] = (
        json.loads(curve_file.read_text()) if curve_file.is_file() else []
    )

    def on_step(step: int, loss: float) -> None:
        if step % every == 0 or step == p.pretrain_steps:
            r = bits_per_byte(model, base_tok, curve_texts, seq_len=p.seq_len, progress=False)
            curve[:] = [
                c for c in curve if c["step"] < step
            ]  # points recorded past the checkpoint resumed from
            curve.append(
                {
                    "step": step,
                    "tokens": step * p.pretrain_batch * p.seq_len,
                    "train_loss": loss,
                    "held_out_bpb": r["bpb"],
                }
            )
            curve_file.write_text(json.dumps(curve))
            print(f"  pretrain step {step}: held-out bpb {r['bpb']:.4f}", flush=True)

    result = train(
        model,
        names,
        data,
        cfg,
        device,
        checkpoint_dir=out / "pretrain.checkpoint",
        resume=True,
        progress=progress,
        on_step=on_step,
        desc="pretrain",
    )
    model.cpu().save_pretrained(str(folder))
    base_tok.save_pretrained(str(folder))
    info = {
        "parameters": sum(t.numel() for t in model.parameters()),
        "steps": result.steps,
        "tokens": result.tokens,
        "corpus_tokens": int(data.sequences.numel()),
        "epochs": result.tokens / data.sequences.numel(),
        "seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "curve": curve,
        "config": asdict(cfg),
    }
    record.write_text(json.dumps(info, indent=1))
    shutil.rmtree(out / "pretrain.checkpoint", ignore_errors=True)
    return info


def finetune(
    model_dir: Path,
    tokenizer: Any,
    data: PackedData,
    p: Preset,
    out: Path,
    device: torch.device,
    progress: bool,
    desc: str,
) -> dict[str, Any]:
    """The finetune command's path (load, freeze, train, write) on already packed data."""
    record = out / "finetune.json"
    cfg = TrainConfig(steps=p.finetune_steps, batch_size=p.finetune_batch, lr=p.finetune_lr, seed=1)
    if record.is_file() and json.loads(record.read_text())["config"] == asdict(cfg):
        print(f"reusing {out}")
        return json.loads(record.read_text())
    loaded = load_causal_lm(model_dir, tokenizer)
    selection = select_trainable(loaded.model, parse_train_spec("embed,lm_head,first,last"))
    model = loaded.model.to(device)
    result = train(model, selection.names, data, cfg, device, progress=progress, desc=desc)
    model.cpu()
    info = {
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "first_loss": result.losses[0],
        "final_loss": sum(result.losses[-5:]) / len(result.losses[-5:]),
        "config": asdict(cfg),
        "trainable_parameters": sum(q.numel() for q in model.parameters() if q.requires_grad),
    }
    patch_tok = tokenizer if hasattr(tokenizer, "ngram_pieces") else None
    write_model_folder(
        loaded, set(selection.names), patch_tok, {"finetune": info}, out, overwrite=True
    )
    record.write_text(json.dumps(info, indent=1))
    return info


def score(
    model_dir: Path, tokenizer: Any, texts: list[str], p: Preset, device: torch.device
) -> dict[str, Any]:
    loaded = load_causal_lm(model_dir, tokenizer)
    model = loaded.model.to(device)
    r = bits_per_byte(model, tokenizer, texts, seq_len=p.seq_len, progress=False)
    del model
    return r


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument(
        "--corpora",
        default=str(REPO.parent / "shared" / "assets" / "corpora"),
        help="folder with the corpora (default: ../shared/assets/corpora)",
    )
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="Mistral tokenizer folder (default: <corpora>/../tokenizers/mistral-7b)",
    )
    ap.add_argument("--out", required=True, help="result folder (the JSON)")
    ap.add_argument(
        "--work",
        default=None,
        help="folder for models and the patch tokenizer; stages found there are reused "
        "(default: --out)",
    )
    ap.add_argument(
        "--json", default=None, help="result JSON (default: OUT/adaptivocab_quality-PRESET.json)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--finetune-steps", type=int, default=None)
    ap.add_argument("--finetune-lr", type=float, default=None)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    p = PRESETS[args.preset]
    if args.pretrain_steps:
        p = replace(p, pretrain_steps=args.pretrain_steps)
    if args.finetune_steps:
        p = replace(p, finetune_steps=args.finetune_steps)
    if args.finetune_lr:
        p = replace(p, finetune_lr=args.finetune_lr)
    corpora = Path(args.corpora)
    tok_dir = (
        Path(args.tokenizer) if args.tokenizer else corpora.parent / "tokenizers" / "mistral-7b"
    )
    corpus_path = corpora / p.corpus
    for path in (corpus_path, tok_dir / "tokenizer.json"):
        if not path.is_file():
            print(f"error: {path} not found; pass --corpora / --tokenizer", file=sys.stderr)
            return 2
    result_dir = Path(args.out)
    result_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.work) if args.work else result_dir
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    progress = not args.quiet
    t_start = time.perf_counter()
    base_tok = load_base_tokenizer(tok_dir)
    corpus = load_corpus([corpus_path])
    train_docs = take_bytes(corpus.train, p.train_bytes)
    eval_texts = take_bytes(corpus.held_out, p.eval_bytes)
    curve_texts = take_bytes(corpus.held_out, p.curve_bytes)
    print(
        f"{args.preset}: {len(train_docs)} training documents, scoring {len(eval_texts)} "
        f"held-out documents ({sum(len(t.encode()) for t in eval_texts):,} bytes) on {device}",
        flush=True,
    )

    base_data = pack_documents(base_tok, train_docs, p.seq_len, progress=progress)
    pre = pretrain(p, base_tok, base_data, curve_texts, out, device, progress)
    print(f"pretraining done at {(time.perf_counter() - t_start) / 60:.1f} min", flush=True)
    base_dir = out / "base-model"

    patch_dir = out / "patch"
    if not (patch_dir / "patch.json").is_file():
        t0 = time.perf_counter()
        patch, _ = build_patch(
            base_tok,
            corpus.train,
            BuildConfig(num_tokens=p.num_tokens, max_ngram=3, progress=progress),
        )
        tok = PatchTokenizer(base_tok, patch)
        tok.reduction_stats = measure_reduction(
            tok, corpus.held_out, source="held-out split", progress=False
        )
        tok.reduction_stats["build_seconds"] = time.perf_counter() - t0
        tok.save_pretrained(patch_dir)
    patch_tok = PatchTokenizer.from_pretrained(patch_dir)
    reduction = patch_tok.reduction_stats or {}

    rows: list[dict[str, Any]] = []
    base_score = score(base_dir, base_tok, eval_texts, p, device)

    def row(name: str, tokenizer: str, r: dict[str, Any], ft: dict[str, Any] | None = None) -> None:
        rows.append(
            {
                "model": name,
                "tokenizer": tokenizer,
                "bpb": r["bpb"],
                "tokens_per_byte": r["tokens_per_byte"],
                "bpb_vs_base": r["bpb"] / base_score["bpb"] - 1,
                "tokens_vs_base": r["tokens_per_byte"] / base_score["tokens_per_byte"] - 1,
                "finetune_tokens": None if ft is None else ft["tokens"],
                "scored_tokens": r["tokens"],
            }
        )
        print(f"  {name}: bpb {r['bpb']:.4f}, tokens/byte {r['tokens_per_byte']:.4f}", flush=True)

    row("base (pretrained)", "base", base_score)
    ft_base = finetune(
        base_dir, base_tok, base_data, p, out / "base-finetuned", device, progress, "finetune base"
    )
    row(
        "base + finetune (control)",
        "base",
        score(out / "base-finetuned", base_tok, eval_texts, p, device),
        ft_base,
    )
    del base_data
    patch_data = pack_documents(patch_tok, train_docs, p.seq_len, progress=progress)
    after: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for init in INITS:
        pdir = out / f"patched-{init}"
        if not (pdir / "adaptivocab_model.json").is_file():
            patch_model_folder(base_dir, patch_dir, pdir, init=init, overwrite=True, progress=False)
        row(f"patched, {init} init", "patch", score(pdir, patch_tok, eval_texts, p, device))
        ft = finetune(
            pdir,
            patch_tok,
            patch_data,
            p,
            out / f"finetuned-{init}",
            device,
            progress,
            f"finetune {init}",
        )
        after[init] = (score(out / f"finetuned-{init}", patch_tok, eval_texts, p, device), ft)
    for init in INITS:
        row(f"patched, {init} init + finetune", "patch", *after[init])

    total_s = time.perf_counter() - t_start
    payload = {
        "benchmark": "adaptivocab_quality",
        "preset": args.preset,
        "run": run_info(),
        "device": str(device),
        "preset_config": asdict(p),
        "corpus": p.corpus,
        "pretrain": pre,
        "patch": {
            "swapped_tokens": len(patch_tok.ngram_pieces),
            "held_out_reduction": reduction.get("reduction"),
            "build_seconds": reduction.get("build_seconds"),
        },
        "eval": {"documents": len(eval_texts), "bytes": base_score["bytes"], "seq_len": p.seq_len},
        "rows": rows,
        "seconds": total_s,
    }
    print()
    print_table(
        rows,
        [
            "model",
            "tokenizer",
            "bpb",
            "tokens_per_byte",
            "bpb_vs_base",
            "tokens_vs_base",
            "finetune_tokens",
        ],
    )
    curve = ", ".join(f"{c['step']}:{c['held_out_bpb']:.3f}" for c in pre["curve"])
    print(f"pretraining held-out bpb by step: {curve}")
    print(f"total {total_s / 60:.1f} min")
    write_json(args.json or str(result_dir / f"adaptivocab_quality-{args.preset}.json"), payload)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except AdaptiVocabError as exc:  # includes Ctrl-C during training, with where the checkpoint is
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
