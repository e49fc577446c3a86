"""AdaptiVocab benchmark: token reduction, round trip, encode throughput, build time.

Mistral tokenizer, 10,000 swapped tokens, n <= 3, on each corpus in
../shared/assets/corpora with the builder's 90/10 document split (documents
are blank-line separated paragraphs; the 10% is never counted by the builder).
Both n-gram scores are built and measured on the held-out 10%.

    python benchmarks/adaptivocab_reduction.py [--assets DIR] [--out FILE] [--num-tokens N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adaptivocab import BuildConfig, PatchTokenizer, build_patch  # noqa: E402
from adaptivocab.base import load_base_tokenizer  # noqa: E402
from adaptivocab.builder import DEFAULT_SCORE, SCORES  # noqa: E402
from adaptivocab.corpus import load_corpus  # noqa: E402
from adaptivocab.stats import measure_reduction  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_corpus(base, path: Path, num_tokens: int, max_ngram: int) -> dict:
    corpus = load_corpus([path])
    held = corpus.held_out
    result: dict = {
        "corpus": path.name,
        "train_docs": len(corpus.train),
        "held_out_docs": len(held),
        "scores": {},
    }
    tokenizers = {}
    for score in SCORES:
        t0 = time.perf_counter()
        patch, report = build_patch(
            base, corpus.train, BuildConfig(num_tokens, max_ngram, score, progress=False)
        )
        build_s = time.perf_counter() - t0
        tok = PatchTokenizer(base, patch)
        stats = measure_reduction(tok, held, progress=False)
        tokenizers[score] = tok
        result["scores"][score] = {
            "build_seconds": round(build_s, 2),
            "train_tokens": report.train_tokens,
            "held_out_base_tokens": stats["base_tokens"],
            "held_out_patched_tokens": stats["patched_tokens"],
            "held_out_reduction": round(stats["reduction"], 4),
            "per_document": {
                k: round(v, 4) if isinstance(v, float) else v
                for k, v in stats["per_document"].items()
            },
        }
    tok = tokenizers[DEFAULT_SCORE]
    result["default_score"] = DEFAULT_SCORE
    result["better_score"] = max(SCORES, key=lambda s: result["scores"][s]["held_out_reduction"])
    # Round trip on every held-out line and every held-out document.
    lines = [ln for d in held for ln in d.split("\n")]
    texts = lines + held
    got = tok.batch_decode(tok.encode_batch(texts))
    want = base.batch_decode(tok.base_encode_batch(texts))
    exact = sum(g == w for g, w in zip(got, want, strict=True))
    result["round_trip"] = {
        "texts": len(texts),
        "lines": len(lines),
        "exact": exact,
        "exact_fraction": exact / len(texts),
    }
    # Throughput on the same text: batched (whole held-out split) and one call per document.
    backend = tok._backend
    base_batch = best_of(lambda: backend.encode_batch_fast(held, add_special_tokens=True))
    patch_batch = best_of(lambda: tok.encode_batch(held))
    sample = held[:3000]
    base_single = best_of(lambda: [backend.encode(d).ids for d in sample])
    patch_single = best_of(lambda: [tok.encode(d) for d in sample])
    base_hf_single = best_of(lambda: [base.encode(d) for d in sample])
    chars = sum(len(d) for d in held)
    result["throughput"] = {
        "batch_base_mb_s": round(chars / base_batch / 1e6, 3),
        "batch_patch_mb_s": round(chars / patch_batch / 1e6, 3),
        "batch_ratio": round(base_batch / patch_batch, 3),
        "per_doc_docs": len(sample),
        "per_doc_ratio_vs_backend": round(base_single / patch_single, 3),
        "per_doc_ratio_vs_hf_encode": round(base_hf_single / patch_single, 3),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--assets",
        default=str(REPO.parent / "shared" / "assets"),
        help="folder with tokenizers/ and corpora/ (default: ../shared/assets)",
    )
    parser.add_argument(
        "--num-tokens", type=int, default=10000, help="swapped tokens (default: %(default)s)"
    )
    parser.add_argument(
        "--max-ngram", type=int, default=3, help="longest n-gram (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "adaptivocab-cpu.json"),
        help="where to write the JSON result",
    )
    args = parser.parse_args()
    assets = Path(args.assets)
    tok_dir = assets / "tokenizers" / "mistral-7b"
    corpora = sorted((assets / "corpora").glob("*.txt.gz"))
    if not tok_dir.is_dir() or not corpora:
        print(f"error: assets not found under {assets}", file=sys.stderr)
        return 2
    base = load_base_tokenizer(tok_dir)
    runs = [bench_corpus(base, c, args.num_tokens, args.max_ngram) for c in corpora]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    out = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit,
        "host": {
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
        },
        "tokenizer": "mistral-7b",
        "num_tokens": args.num_tokens,
        "max_ngram": args.max_ngram,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    head = (
        f"{'corpus':<22}{'score':<18}{'build s':>8}{'reduction':>11}{'round trip':>12}"
        f"{'enc x (batch)':>15}{'enc x (per doc)':>17}"
    )
    print(head)
    for r in runs:
        for score, s in r["scores"].items():
            line = (
                f"{r['corpus']:<22}{score:<18}{s['build_seconds']:>8.1f}"
                f"{100 * s['held_out_reduction']:>10.2f}%"
            )
            if score == r["default_score"]:
                t = r["throughput"]
                line += (
                    f"{100 * r['round_trip']['exact_fraction']:>11.2f}%{t['batch_ratio']:>15.2f}"
                    f"{t['per_doc_ratio_vs_backend']:>17.2f}"
                )
            print(line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
