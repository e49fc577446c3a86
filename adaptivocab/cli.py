"""Command line: build, stats, patch-model, finetune, eval."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from adaptivocab.errors import AdaptiVocabError, TrainingInterrupted


def _number(
    kind: type[int] | type[float], rule: str, ok: Callable[[Any], bool]
) -> Callable[[str], Any]:
    """A flag's parser for a number of ``kind`` for which ``ok`` holds, refusing others with
    "must be ``rule``"."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


_positive_int = _number(int, "at least 1", lambda v: v >= 1)
_non_negative_int = _number(int, "at least 0", lambda v: v >= 0)
_positive_float = _number(float, "positive", lambda v: v > 0)
_non_negative_float = _number(float, "a finite number >= 0", lambda v: 0 <= v < math.inf)
_fraction = _number(float, "in [0, 1]", lambda v: 0 <= v <= 1)
# --max-ngram: an n-gram is a run of 2..n base tokens, so 1 is refused here too, not after
# the tokenizer and the corpus were loaded.
_ngram_size = _number(int, "at least 2 (n-grams are runs of 2..n base tokens)", lambda v: v >= 2)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as ``sarathi``'s are: argparse's own printed the whole
    usage block first, above the line that says what was wrong. Subcommands' parsers are of
    this class too (argparse makes them with the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each command's parser, so an unknown flag is reported by (and points to the help
        # of) the command it was given to, as ``sarathi`` does, not the top-level parser.
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> _Parser:
    from adaptivocab.builder import DEFAULT_SCORE, SCORES
    from adaptivocab.embeddings import DEFAULT_EXP_BASE, INIT_METHODS

    parser = _Parser(
        # The console script's name when run as it, else the module form.
        prog="adaptivocab"
        if os.path.basename(sys.argv[0]) == "adaptivocab"
        else "python -m adaptivocab",
        description=(
            "AdaptiVocab: swap a BPE tokenizer's least useful tokens for frequent domain n-grams."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "build", help="count n-grams on a domain corpus and write a patch tokenizer folder"
    )
    b.add_argument(
        "--tokenizer",
        required=True,
        help="base tokenizer: a folder with tokenizer.json or a Hugging Face id available offline",
    )
    b.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        metavar="FILE",
        help=(
            "domain text files (UTF-8, optionally gzip); documents are blocks separated by blank "
            "lines"
        ),
    )
    b.add_argument(
        "--num-tokens",
        type=_positive_int,
        default=10000,
        help="how many base tokens to swap for n-grams (default: %(default)s)",
    )
    b.add_argument(
        "--max-ngram",
        type=_ngram_size,
        default=3,
        help="longest n-gram, in base tokens (default: %(default)s)",
    )
    b.add_argument(
        "--score",
        choices=SCORES,
        default=DEFAULT_SCORE,
        help=(
            "n-gram score: frequency x (length-1) = tokens saved, or frequency x length as in the "
            "paper (default: %(default)s)"
        ),
    )
    b.add_argument(
        "--out",
        required=True,
        help="output folder (must not exist or be empty); written atomically",
    )
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    b.add_argument("--quiet", action="store_true", help="no progress bars")

    s = sub.add_parser("stats", help="measure the token reduction of a patch tokenizer on any text")
    s.add_argument(
        "--patch-tokenizer", required=True, help="patch tokenizer folder (written by build)"
    )
    s.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        metavar="FILE",
        help="text files to measure (UTF-8, optionally gzip); all documents are measured",
    )
    s.add_argument(
        "--write",
        action="store_true",
        help="store the result as the folder's reduction_stats.json (read by the engine)",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--quiet", action="store_true", help="no progress bars")

    m = sub.add_parser(
        "patch-model",
        help=(
            "write a Hugging Face model folder whose swapped embedding rows are initialised from "
            "their pieces"
        ),
    )
    m.add_argument(
        "--model",
        required=True,
        help="Hugging Face model folder (config.json + model.safetensors or a sharded index)",
    )
    m.add_argument(
        "--patch-tokenizer",
        required=True,
        help="patch tokenizer folder built from this model's tokenizer",
    )
    m.add_argument(
        "--init",
        choices=INIT_METHODS,
        default="exp",
        help="row initialisation: exp (paper), mean, first, last or random (default: %(default)s)",
    )
    m.add_argument(
        "--exp-base",
        type=float,
        default=DEFAULT_EXP_BASE,
        help="base of the exponential piece weights for --init exp (default: e)",
    )
    m.add_argument(
        "--seed", type=int, default=0, help="seed for --init random (default: %(default)s)"
    )
    m.add_argument(
        "--out",
        required=True,
        help="output model folder (must not exist or be empty); written atomically",
    )
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_finetune_eval(sub, INIT_METHODS)
    parser.commands = dict(sub.choices)
    return parser


def _add_finetune_eval(
    sub: argparse._SubParsersAction[_Parser], init_methods: Sequence[str]
) -> None:
    from adaptivocab.trainable import BLOCKS, DEFAULT_TRAIN

    f = sub.add_parser(
        "finetune",
        help=(
            "train the chosen blocks of a patched model on domain text and write a servable model "
            "folder"
        ),
    )
    f.add_argument(
        "--model",
        required=True,
        help="model folder: patched (by patch-model) or the base model (patched here with --init)",
    )
    f.add_argument(
        "--patch-tokenizer", required=True, help="patch tokenizer folder (written by build)"
    )
    f.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        metavar="FILE",
        help="domain text files (UTF-8, optionally gzip); the 90%% training split is used",
    )
    f.add_argument(
        "--out",
        required=True,
        help="output model folder (must not exist or be empty); written atomically at the end",
    )
    f.add_argument(
        "--train",
        default=DEFAULT_TRAIN,
        help=(
            f"trainable blocks, comma separated, from {', '.join(BLOCKS)} (default: %(default)s, "
            "as in the paper)"
        ),
    )
    f.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="optimizer updates (default: one pass over the training split)",
    )
    f.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="sequences per update (default: %(default)s)",
    )
    f.add_argument(
        "--seq-len",
        type=_positive_int,
        default=None,
        help=(
            "tokens per sequence, at most the model's context (default: 768 as in the paper, or "
            "the model's context if shorter)"
        ),
    )
    f.add_argument(
        "--lr",
        type=_positive_float,
        default=5e-4,
        help="peak learning rate of AdamW (default: %(default)s)",
    )
    f.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default: %(default)s)")
    f.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default: %(default)s)")
    f.add_argument(
        "--weight-decay",
        type=float,
        default=0.1,
        help="AdamW weight decay of matrices (default: %(default)s)",
    )
    f.add_argument(
        "--warmup-steps",
        type=_non_negative_int,
        default=None,
        help="linear warmup steps before the cosine decay (default: 5%% of --steps)",
    )
    f.add_argument(
        "--min-lr-ratio",
        type=_fraction,
        default=0.1,
        help="final learning rate as a fraction of --lr (default: %(default)s)",
    )
    f.add_argument(
        "--grad-clip",
        type=_non_negative_float,
        default=1.0,
        help="gradient norm clip, 0 for none (default: %(default)s)",
    )
    f.add_argument(
        "--init",
        choices=init_methods,
        default="exp",
        help="row init when --model is the base model (default: %(default)s)",
    )
    f.add_argument(
        "--seed", type=int, default=0, help="seed of the data order (default: %(default)s)"
    )
    f.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU if present), cpu, cuda or cuda:N (default: %(default)s)",
    )
    f.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto = bf16 autocast on a GPU, fp32 on CPU (default: %(default)s)",
    )
    f.add_argument(
        "--checkpoint-dir", default=None, help="where checkpoints go (default: OUT.checkpoint)"
    )
    f.add_argument(
        "--save-every",
        type=_non_negative_int,
        default=200,
        help="steps between checkpoints, 0 for only at the end or on Ctrl-C (default: %(default)s)",
    )
    f.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint (same options required)"
    )
    f.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep the checkpoint after the model folder is written",
    )
    f.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    f.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("eval", help="bits per byte of held-out text (fair across tokenizers)")
    e.add_argument(
        "--model", required=True, help="model folder (a patched folder uses its patch tokenizer)"
    )
    e.add_argument(
        "--patch-tokenizer",
        default=None,
        help="score with this patch tokenizer (a base model is patched in memory with --init)",
    )
    e.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        metavar="FILE",
        help="text files (UTF-8, optionally gzip)",
    )
    e.add_argument(
        "--split",
        choices=("held-out", "all"),
        default="held-out",
        help=(
            "held-out = the 10%% hash split build and finetune never train on (default: "
            "%(default)s)"
        ),
    )
    e.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=None,
        help="score only the first documents up to about this many UTF-8 bytes",
    )
    e.add_argument(
        "--seq-len",
        type=_positive_int,
        default=None,
        help=(
            "scoring window in tokens, at most the model's context (default: 768, or the "
            "model's context if shorter)"
        ),
    )
    e.add_argument(
        "--batch-tokens",
        type=_positive_int,
        default=8192,
        help="tokens per forward pass (default: %(default)s)",
    )
    e.add_argument(
        "--init",
        choices=init_methods,
        default="exp",
        help="row init when patching a base model in memory (default: %(default)s)",
    )
    e.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)"
    )
    e.add_argument("--json", action="store_true", help="print JSON instead of a line")
    e.add_argument("--quiet", action="store_true", help="no progress bars")


def warn_if_longer(stats: dict[str, Any]) -> None:
    """Say so on stderr when the patch makes the measured text longer, not shorter: the
    swapped-out tokens were common in it (a corpus too small, or unlike this text)."""
    if stats["reduction"] < 0:
        print(
            f"warning: the patch makes this text {-100 * stats['reduction']:.1f}% longer "
            f"(ratio {stats['ratio']:.3f}): the tokens it swapped out are common here; build "
            "on more of the domain's text, or swap fewer (--num-tokens)",
            file=sys.stderr,
        )


def _build(args: argparse.Namespace) -> None:
    from adaptivocab.base import load_base_tokenizer
    from adaptivocab.builder import BuildConfig, build_patch
    from adaptivocab.corpus import load_corpus
    from adaptivocab.fsutil import atomic_output_dir, check_output_dir
    from adaptivocab.patch import PATCH_FILE
    from adaptivocab.stats import format_stats, measure_reduction
    from adaptivocab.tokenizer import PatchTokenizer

    check_output_dir(args.out, args.overwrite)
    t0 = time.perf_counter()
    base = load_base_tokenizer(args.tokenizer)
    if os.path.isfile(os.path.join(os.path.expanduser(args.tokenizer), PATCH_FILE)):
        # Its tokenizer.json is the base's: the patch in it is not read, and patches do not
        # stack, so building "on" it gives a patch of the base.
        print(
            f"note: {args.tokenizer} is an AdaptiVocab patch folder; the new patch is built on "
            "its base tokenizer, not on that patch",
            file=sys.stderr,
        )
    corpus = load_corpus(args.corpus)
    config = BuildConfig(
        num_tokens=args.num_tokens,
        max_ngram=args.max_ngram,
        score=args.score,
        progress=not args.quiet,
    )
    patch, report = build_patch(base, corpus.train, config)
    tok = PatchTokenizer(base, patch)
    # The statistics size the engine's KV cache: say so when they come from the text the
    # n-grams were chosen on (they were labelled held-out and overstated the reduction).
    source = (
        "training text (too few documents for a held-out split)"
        if corpus.held_out_is_train
        else "held-out split (1 in 10 documents by hash)"
    )
    stats = measure_reduction(tok, corpus.held_out, source=source, progress=not args.quiet)
    stats["build_seconds"] = time.perf_counter() - t0
    tok.reduction_stats = stats
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        tok.save_pretrained(tmp)
    print(format_stats(stats))
    warn_if_longer(stats)
    if corpus.held_out_is_train:
        print(
            f"warning: the corpus has too few documents (blank-line-separated paragraphs) for a "
            "held-out split, so the reduction was measured on the training text and is "
            "optimistic; measure other domain text with `adaptivocab stats --patch-tokenizer "
            f"{args.out} --corpus FILE --write`",
            file=sys.stderr,
        )
    print(
        f"wrote {args.out} ({len(patch.ngrams)} swapped tokens, {report.rounds} rounds, "
        f"{stats['build_seconds']:.1f}s)"
    )


def _stats(args: argparse.Namespace) -> None:
    from adaptivocab.corpus import load_documents
    from adaptivocab.fsutil import atomic_write_text, check_writable
    from adaptivocab.patch import STATS_FILE
    from adaptivocab.stats import format_stats, measure_reduction
    from adaptivocab.tokenizer import PatchTokenizer

    # The stored stats are what this replaces: a corrupt file must not stop the rerun that
    # every refusal of it recommends.
    tok = PatchTokenizer.from_pretrained(args.patch_tokenizer, with_stats=False)
    if args.write:  # before measuring, which can take minutes
        check_writable(args.patch_tokenizer, "copy the folder somewhere writable, or drop --write")
    docs = load_documents(args.corpus)
    stats = measure_reduction(
        tok, docs, source=", ".join(str(c) for c in args.corpus), progress=not args.quiet
    )
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    warn_if_longer(stats)
    if args.write:
        target = Path(args.patch_tokenizer) / STATS_FILE
        atomic_write_text(target, json.dumps(stats, indent=1))
        # Said on stderr under --json, whose stdout is the statistics' JSON alone.
        print(f"wrote {target}", file=sys.stderr if args.json else sys.stdout)


def _patch_model(args: argparse.Namespace) -> None:
    from adaptivocab.model_io import patch_model_folder

    meta = patch_model_folder(
        args.model,
        args.patch_tokenizer,
        args.out,
        args.init,
        args.exp_base,
        args.seed,
        args.overwrite,
        not args.quiet,
    )
    print(
        f"wrote {args.out} ({meta['swapped_ids']} rows re-initialised with {args.init}, "
        f"tied={meta['tied']})"
    )


def _finetune(args: argparse.Namespace) -> None:
    from adaptivocab.finetune import FinetuneJob, run_finetune
    from adaptivocab.trainable import parse_train_spec
    from adaptivocab.trainer import TrainConfig

    cfg = TrainConfig(
        steps=1,
        batch_size=args.batch_size,
        lr=args.lr,
        beta1=args.beta1,
        beta2=args.beta2,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip,
        seed=args.seed,
        precision=args.precision,
        save_every=args.save_every,
    )
    job = FinetuneJob(
        model_dir=args.model,
        patch_dir=args.patch_tokenizer,
        corpus=tuple(args.corpus),
        out=args.out,
        train_blocks=parse_train_spec(args.train),
        steps=args.steps,
        seq_len=args.seq_len,
        train=cfg,
        init=args.init,
        device=args.device,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        keep_checkpoint=args.keep_checkpoint,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    summary = run_finetune(job)
    print(
        f"wrote {args.out} ({summary['steps']} steps, {summary['tokens']:,} tokens, final loss "
        f"{summary['final_loss']:.4f})"
    )


def _eval(args: argparse.Namespace) -> None:
    from adaptivocab.corpus import load_corpus
    from adaptivocab.eval import held_out_texts, score_folder, take_bytes

    if args.split == "held-out":
        corpus = load_corpus(args.corpus)
        if corpus.held_out_is_train:
            # load_corpus then hands back the training text as the held-out split: scored in
            # silence, it was reported as held-out bits per byte of text finetune trains on.
            print(
                "warning: the corpus has too few documents (blank-line-separated paragraphs) "
                "for a held-out split, so all of it is scored, the same text build and "
                "finetune train on: the result is optimistic; pass other domain text, or "
                "--split all to score it knowingly",
                file=sys.stderr,
            )
        texts = take_bytes(corpus.held_out, args.max_bytes)
    else:
        texts = held_out_texts(args.corpus, args.split, args.max_bytes)
    result = score_folder(
        args.model,
        args.patch_tokenizer,
        texts,
        init=args.init,
        seq_len=args.seq_len,
        batch_tokens=args.batch_tokens,
        device=args.device,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"bits/byte {result['bpb']:.4f}  tokens/byte {result['tokens_per_byte']:.4f}  "
            f"({result['tokens']:,} tokens, {result['bytes']:,} bytes, {result['documents']} "
            f"document{'' if result['documents'] == 1 else 's'}, {result['tokenizer']} tokenizer)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # Building the parser imports torch (seconds): a Ctrl-C then is an interrupted start.
        parser = _parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            where = parser.commands.get(args.command or "", parser)
            where.error(f"unrecognized arguments: {' '.join(unknown)}")
    except KeyboardInterrupt:
        return 130
    # Start-up is over: a Ctrl-C now raises KeyboardInterrupt, which the commands handle
    # (``python -m adaptivocab`` had it exit at once while the parser was built).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.command is None:  # as `sarathi` with no command: the help, not an error
        parser.print_help()
        return 0
    handlers = {
        "build": _build,
        "stats": _stats,
        "patch-model": _patch_model,
        "finetune": _finetune,
        "eval": _eval,
    }
    try:
        handlers[args.command](args)
    except TrainingInterrupted as exc:  # a Ctrl-C, with the checkpoint saved
        print(f"adaptivocab {args.command}: {exc}", file=sys.stderr)
        return 130
    except AdaptiVocabError as exc:
        print(f"adaptivocab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adaptivocab {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0
