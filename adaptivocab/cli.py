"""Command line: build, stats, patch-model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adaptivocab.errors import AdaptiVocabError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    from adaptivocab.builder import DEFAULT_SCORE, SCORES
    from adaptivocab.embeddings import DEFAULT_EXP_BASE, INIT_METHODS

    parser = argparse.ArgumentParser(
        prog="python -m adaptivocab",
        description="AdaptiVocab: swap a BPE tokenizer's least useful tokens for frequent domain n-grams.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="count n-grams on a domain corpus and write a patch tokenizer folder")
    b.add_argument("--tokenizer", required=True, help="base tokenizer: a folder with tokenizer.json or a Hugging Face id available offline")
    b.add_argument("--corpus", required=True, nargs="+", metavar="FILE", help="domain text files (UTF-8, optionally gzip); documents are blocks separated by blank lines")
    b.add_argument("--num-tokens", type=_positive_int, default=10000, help="how many base tokens to swap for n-grams (default: %(default)s)")
    b.add_argument("--max-ngram", type=_positive_int, default=3, help="longest n-gram, in base tokens (default: %(default)s)")
    b.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE, help="n-gram score: frequency x (length-1) = tokens saved, or frequency x length as in the paper (default: %(default)s)")
    b.add_argument("--out", required=True, help="output folder (must not exist or be empty); written atomically")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    b.add_argument("--quiet", action="store_true", help="no progress bars")

    s = sub.add_parser("stats", help="measure the token reduction of a patch tokenizer on any text")
    s.add_argument("--patch-tokenizer", required=True, help="patch tokenizer folder (written by build)")
    s.add_argument("--corpus", required=True, nargs="+", metavar="FILE", help="text files to measure (UTF-8, optionally gzip); all documents are measured")
    s.add_argument("--write", action="store_true", help="store the result as the folder's reduction_stats.json (read by the engine)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--quiet", action="store_true", help="no progress bars")

    m = sub.add_parser("patch-model", help="write a Hugging Face model folder whose swapped embedding rows are initialised from their pieces")
    m.add_argument("--model", required=True, help="Hugging Face model folder (config.json + model.safetensors or a sharded index)")
    m.add_argument("--patch-tokenizer", required=True, help="patch tokenizer folder built from this model's tokenizer")
    m.add_argument("--init", choices=INIT_METHODS, default="exp", help="row initialisation: exp (paper), mean, first, last or random (default: %(default)s)")
    m.add_argument("--exp-base", type=float, default=DEFAULT_EXP_BASE, help="base of the exponential piece weights for --init exp (default: e)")
    m.add_argument("--seed", type=int, default=0, help="seed for --init random (default: %(default)s)")
    m.add_argument("--out", required=True, help="output model folder (must not exist or be empty); written atomically")
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _build(args: argparse.Namespace) -> None:
    from adaptivocab.base import load_base_tokenizer
    from adaptivocab.builder import BuildConfig, build_patch
    from adaptivocab.corpus import load_corpus
    from adaptivocab.fsutil import atomic_output_dir, check_output_dir
    from adaptivocab.stats import format_stats, measure_reduction
    from adaptivocab.tokenizer import PatchTokenizer

    check_output_dir(args.out, args.overwrite)
    t0 = time.perf_counter()
    base = load_base_tokenizer(args.tokenizer)
    corpus = load_corpus(args.corpus)
    config = BuildConfig(num_tokens=args.num_tokens, max_ngram=args.max_ngram, score=args.score, progress=not args.quiet)
    patch, report = build_patch(base, corpus.train, config)
    tok = PatchTokenizer(base, patch)
    stats = measure_reduction(tok, corpus.held_in, source="held-in split (1 in 10 documents by hash)", progress=not args.quiet)
    stats["build_seconds"] = time.perf_counter() - t0
    tok.reduction_stats = stats
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        tok.save_pretrained(tmp)
    print(format_stats(stats))
    print(f"wrote {args.out} ({len(patch.ngrams)} swapped tokens, {report.rounds} rounds, {stats['build_seconds']:.1f}s)")


def _stats(args: argparse.Namespace) -> None:
    import os
    import tempfile

    from adaptivocab.corpus import load_documents
    from adaptivocab.patch import STATS_FILE
    from adaptivocab.stats import format_stats, measure_reduction
    from adaptivocab.tokenizer import PatchTokenizer

    tok = PatchTokenizer.from_pretrained(args.patch_tokenizer)
    docs = load_documents(args.corpus)
    stats = measure_reduction(tok, docs, source=", ".join(str(c) for c in args.corpus), progress=not args.quiet)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    if args.write:
        folder = Path(args.patch_tokenizer)
        fd, tmp = tempfile.mkstemp(prefix=".stats-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(stats, fh, indent=1)
        os.replace(tmp, folder / STATS_FILE)


def _patch_model(args: argparse.Namespace) -> None:
    from adaptivocab.model_io import patch_model_folder

    meta = patch_model_folder(
        args.model, args.patch_tokenizer, args.out, args.init, args.exp_base, args.seed, args.overwrite, not args.quiet
    )
    print(f"wrote {args.out} ({meta['swapped_ids']} rows re-initialised with {args.init}, tied={meta['tied']})")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"build": _build, "stats": _stats, "patch-model": _patch_model}
    try:
        handlers[args.command](args)
    except AdaptiVocabError as exc:
        print(f"adaptivocab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adaptivocab {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0
