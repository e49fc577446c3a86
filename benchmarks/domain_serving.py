"""Domain serving end to end: the base tokenizer vs an AdaptiVocab patch tokenizer, served.

The same domain text workload goes through ``python -m sarathi serve`` once per configuration:
{base tokenizer, patch tokenizer built on that domain} x {vattention, paged KV cache}. Each
request is a prompt cut from held-out domain text plus the reference continuation that follows
it; under each tokenizer the prompt is sent as that tokenizer's ids (so prompt token counts are
exact) and ``max_tokens`` is the continuation's token count under that tokenizer (EOS ignored).
Model weights are random (a real shape, ``--load-format dummy``), so the generated text is
gibberish; what is measured is the cost of serving the *reference* text, which is what the
generated tokens stand for.

Reported per configuration: requests/s, output tokens/s, output text bytes/s (UTF-8 bytes of the
reference continuations of completed requests / duration), TTFT and TPOT (median, p99), tokens
per request, KV bytes per request (tokens x KV bytes per token of the model shape; /metrics has
no per-request KV figure, only cache-wide gauges), and the peak of the server's KV gauges
(``sarathi:kv_cache_mapped_bytes``, ``..._used_bytes``) polled from /metrics during the run, with
the pool size. Then patch vs base per backend. The patch tokenizer is built from the training
part of the corpus (9 of every 10 blocks of ``--heldout-block-chars``); requests are cut from the
held-out blocks only, so the measured reduction is what unseen domain text gets. Every server
is told the workload's typical request size in base tokens (``--expected-request-tokens``); a
patched server scales it by its tokenizer's measured ratio, so the same KV pool gives it more
slots. Servers always stop (errors, Ctrl-C, SIGTERM); a configuration that fails to start is
reported as failed and the others still run. The workload itself (corpus split, request
cutting, tokenization) is in ``domain_workload.py``.

    python benchmarks/domain_serving.py                      # llama2-7b shape, Mistral tokenizer,
                                                             # linux-docs (GPU)
    python benchmarks/domain_serving.py --model-folder demo --backends vattention \\
        --corpus my.txt --num-swaps 200 --num-requests 8 --prompt-tokens 64 --output-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # sarathi and adaptivocab from this checkout, installed or not

from common import print_table, run_info, write_json  # noqa: E402 - after the sys.path line
from domain_workload import (  # noqa: E402 - after the sys.path line
    BenchmarkError,
    TextRequest,
    TokenizedWorkload,
    cut_requests,
    split_corpus,
    tokenize_workload,
    workload_stats,
)
from serve import (  # noqa: E402 - after the sys.path line
    RequestResult,
    RequestSpec,
    ServerProcess,
    ServerStartError,
    arrival_gaps,
    launch_server,
    read_corpus,
    run_load,
    summarize,
)

ASSETS = os.path.join(os.path.dirname(REPO), "shared", "assets")
# Server flags per KV-cache backend name of this benchmark.
BACKEND_ARGS: dict[str, list[str]] = {
    "vattention": ["--attention-backend", "auto"],
    "paged": ["--attention-backend", "paged"],
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """One progress line per phase, readable in a long log."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# -- model and patch tokenizer --------------------------------------------------------------
def prepare_model_folder(args: argparse.Namespace, work: str) -> str:
    """The served folder: ``--model-folder`` as is, or the preset's config.json plus the base
    tokenizer's files (random weights come from ``--load-format dummy``)."""
    if args.model_folder:
        if args.model_folder == "demo":
            from sarathi.transformers_utils.demo import demo_model_path

            return demo_model_path()
        if not os.path.isfile(os.path.join(args.model_folder, "config.json")):
            raise BenchmarkError(f"{args.model_folder} has no config.json")
        return args.model_folder
    from sarathi.model_executor.presets import PRESETS

    if args.preset not in PRESETS:
        raise BenchmarkError(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
    tok_dir = args.tokenizer or os.path.join(ASSETS, "tokenizers", "mistral-7b")
    if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        raise BenchmarkError(f"no tokenizer.json in {tok_dir} (pass --tokenizer)")
    folder = os.path.join(work, f"model-{args.preset}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(PRESETS[args.preset], f, indent=2)
    for name in os.listdir(tok_dir):
        if os.path.isfile(os.path.join(tok_dir, name)):
            shutil.copy(os.path.join(tok_dir, name), os.path.join(folder, name))
    return folder


def build_patch_tokenizer(
    args: argparse.Namespace, base_dir: str, train_text: str, work: str
) -> str:
    """``python -m adaptivocab build`` on the training text; returns the patch folder."""
    train_path = os.path.join(work, "train.txt")
    with open(train_path, "w", encoding="utf-8") as f:
        f.write(train_text)
    out = os.path.join(work, "patch")
    cmd = [
        sys.executable,
        "-m",
        "adaptivocab",
        "build",
        "--tokenizer",
        base_dir,
        "--corpus",
        train_path,
        "--num-tokens",
        str(args.num_swaps),
        "--max-ngram",
        str(args.max_ngram),
        "--out",
        out,
        "--overwrite",
        "--quiet",
    ]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.build_timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"adaptivocab build took over {args.build_timeout:.0f} s") from None
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise BenchmarkError(
            f"adaptivocab build failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    os.remove(train_path)
    return out


def kv_bytes_per_token(model_folder: str, dtype: str) -> int:
    """2 (K and V) x layers x KV heads x head dim x bytes per element."""
    from sarathi.model_executor.model_shape import load_model_shape

    s = load_model_shape(model_folder)
    return 2 * s.num_layers * s.num_kv_heads * s.head_dim * DTYPE_BYTES[dtype]


# -- one configuration ----------------------------------------------------------------------
@dataclass
class ServeConfig:
    tokenizer: str  # "base" or "patch"
    backend: str  # "vattention" or "paged"
    server_args: list[str]

    @property
    def name(self) -> str:
        return f"{self.tokenizer}/{self.backend}"


@dataclass
class KVPeak:
    """Extremes of the server's KV gauges over the polls of one run."""

    mapped_bytes: float = 0.0
    used_bytes: float = 0.0
    min_pages_free: float | None = None
    running: float = 0.0
    samples: int = 0
    errors: int = 0

    def update(self, m: dict[str, float]) -> None:
        self.samples += 1
        self.mapped_bytes = max(self.mapped_bytes, m.get("sarathi:kv_cache_mapped_bytes", 0.0))
        self.used_bytes = max(self.used_bytes, m.get("sarathi:kv_cache_used_bytes", 0.0))
        self.running = max(self.running, m.get("sarathi:num_requests_running", 0.0))
        free = m.get("sarathi:kv_cache_pages_free")
        if free is not None:
            self.min_pages_free = (
                free if self.min_pages_free is None else min(self.min_pages_free, free)
            )


@dataclass
class ConfigResult:
    tokenizer: str
    backend: str
    ok: bool = False
    error: str | None = None
    startup_line: str | None = None
    attention: str | None = None
    kv_cache: str | None = None
    dtype: str | None = None
    slots: int | None = None
    pool_tokens: int | None = None
    pool_bytes: int | None = None
    pages_free_idle: float | None = None
    completed: int = 0
    failed: int = 0
    duration_s: float = 0.0
    requests_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    text_bytes_per_s: float = 0.0
    ttft_median_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_median_ms: float | None = None
    tpot_p99_ms: float | None = None
    mean_prompt_tokens: float = 0.0
    mean_output_tokens: float = 0.0
    mean_total_tokens: float = 0.0
    output_len_mismatches: int = 0
    kv_bytes_per_token: int | None = None
    kv_bytes_per_request: float | None = None
    peak_kv_mapped_bytes: float | None = None
    peak_kv_used_bytes: float | None = None
    min_pages_free: float | None = None
    peak_running: float | None = None
    metric_samples: int = 0
    preemptions: float | None = None
    # From the server's adaptivocab counters (patch only). Their base count expands patched
    # ids into base pieces, which can exceed the base tokenizer's own count of the text.
    server_prompt_reduction: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value}, series of one name summed over labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


async def poll_metrics(url: str, stop: asyncio.Event, interval: float, peak: KVPeak) -> None:
    """Scrape /metrics every ``interval`` seconds until ``stop``, once more after it."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while True:
            try:
                resp = await client.get("/metrics")
                resp.raise_for_status()
                peak.update(parse_metrics(resp.text))
            except httpx.HTTPError:
                peak.errors += 1
            if stop.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def measure(
    url: str, model: str, specs: list[RequestSpec], gaps: list[float], interval: float
) -> tuple[list[RequestResult], float, KVPeak]:
    peak = KVPeak()
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_metrics(url, stop, interval, peak))
    try:
        results, duration = await run_load(url, model, specs, gaps, None, None)
    finally:
        stop.set()
        await poller
    return results, duration, peak


def _run_bounded(coro: Any, seconds: float, what: str) -> Any:
    """asyncio.run with a deadline: a hung server fails its configuration, not the benchmark."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, seconds)

    try:
        return asyncio.run(bounded())
    except asyncio.TimeoutError:
        raise BenchmarkError(f"{what} took over {seconds:.0f} s (--run-timeout)") from None


def parse_startup_line(line: str, result: ConfigResult) -> None:
    """Fill what the server's serving line says: dtype, attention, KV cache, slots, pool."""
    patterns = {
        "dtype": r"dtype (\w+)",
        "attention": r"attention ([^,\s]+)",
        "kv_cache": r"KV cache (\S+?):",
    }
    for key, pattern in patterns.items():
        m = re.search(pattern, line)
        if m:
            setattr(result, key, m.group(1))
    m = re.search(r"(\d+) slots, (\d+) tokens", line)
    if m:
        result.slots, result.pool_tokens = int(m.group(1)), int(m.group(2))


def run_config(
    cfg: ServeConfig,
    wl: TokenizedWorkload,
    texts: list[TextRequest],
    gaps: list[float],
    model_folder: str,
    args: argparse.Namespace,
    log_path: str,
) -> ConfigResult:
    """Start the server, warm it up, run the workload while polling /metrics, stop it.
    A failure is recorded in the result (never raised), except Ctrl-C."""
    result = ConfigResult(cfg.tokenizer, cfg.backend)
    log(f"starting server {cfg.name} (log: {log_path})")
    with open(log_path, "w", encoding="utf-8") as sink:
        try:
            server = launch_server(cfg.server_args, timeout=args.start_timeout, sink=sink)
        except ServerStartError as e:
            result.error = f"server did not start: {e}"
            log(f"FAILED {cfg.name}: {result.error}")
            return result
        try:
            _serve_workload(server, cfg, wl, texts, gaps, model_folder, args, result)
        except (httpx.HTTPError, BenchmarkError, KeyError, ValueError) as e:
            result.ok = False
            result.error = f"{type(e).__name__}: {e}"
            log(f"FAILED {cfg.name}: {result.error}")
        finally:
            log(f"stopping server {cfg.name}")
            server.stop()
    return result


def _serve_workload(
    server: ServerProcess,
    cfg: ServeConfig,
    wl: TokenizedWorkload,
    texts: list[TextRequest],
    gaps: list[float],
    model_folder: str,
    args: argparse.Namespace,
    result: ConfigResult,
) -> None:
    result.startup_line = server.startup_line
    parse_startup_line(server.startup_line, result)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        card = http.get("/v1/models").raise_for_status().json()["data"][0]
        model = card["id"]
        longest = max(len(s.prompt_ids) + s.output_len for s in wl.specs)
        if card.get("max_model_len") and longest > card["max_model_len"]:
            raise BenchmarkError(
                f"a request of {longest} tokens exceeds the server's context "
                f"({card['max_model_len']})"
            )
        # The server's own tokenizer must agree with the ids we send (same folder, same patch).
        resp = http.post("/tokenize", json={"model": model, "prompt": texts[0].prompt})
        served = resp.raise_for_status().json()["count"]
        if served != len(wl.specs[0].prompt_ids):
            log(
                f"warning: the server counts {served} prompt tokens where this script counts "
                f"{len(wl.specs[0].prompt_ids)}"
            )
    if args.warmup:
        log(f"warming up {cfg.name} ({args.warmup} requests)")
        warm = [RequestSpec(wl.specs[0].prompt_ids, 4)] * args.warmup
        _run_bounded(
            run_load(server.url, model, warm, [0.0] * len(warm), None, None),
            args.run_timeout,
            "the warm-up",
        )
    with httpx.Client(base_url=server.url, timeout=60) as http:
        before = parse_metrics(http.get("/metrics").raise_for_status().text)
    log(f"running {cfg.name}: {len(wl.specs)} requests, rate {args.request_rate}")
    results, duration, peak = _run_bounded(
        measure(server.url, model, wl.specs, gaps, args.poll_interval), args.run_timeout, "the run"
    )
    with httpx.Client(base_url=server.url, timeout=60) as http:
        after = parse_metrics(http.get("/metrics").raise_for_status().text)
    fill_result(result, wl, texts, results, duration, peak, before, after, model_folder)
    log(
        f"done {cfg.name}: {result.completed} completed, {result.failed} failed, "
        f"{result.requests_per_s:.2f} req/s, {result.duration_s:.1f} s"
    )


def fill_result(
    result: ConfigResult,
    wl: TokenizedWorkload,
    texts: list[TextRequest],
    results: list[RequestResult],
    duration: float,
    peak: KVPeak,
    before: dict[str, float],
    after: dict[str, float],
    model_folder: str,
) -> None:
    s = summarize(results, duration)
    ok = [i for i, r in enumerate(results) if r.ok]  # run_load keeps the specs' order
    result.summary = s
    result.ok = s["failed"] == 0
    if not result.ok:
        result.error = f"{s['failed']} requests failed: {s['errors']}"
    result.completed, result.failed, result.duration_s = s["completed"], s["failed"], duration
    result.requests_per_s = s["request_throughput_rps"]
    result.output_tokens_per_s = s["output_tokens_per_s"]
    result.text_bytes_per_s = sum(texts[i].continuation_bytes for i in ok) / duration
    result.ttft_median_ms = _num(s["ttft"]["median_ms"])
    result.ttft_p99_ms = _num(s["ttft"]["p99_ms"])
    result.tpot_median_ms = _num(s["tpot"]["median_ms"])
    result.tpot_p99_ms = _num(s["tpot"]["p99_ms"])
    result.output_len_mismatches = sum(results[i].output_len != wl.specs[i].output_len for i in ok)
    n = len(wl.specs)
    result.mean_prompt_tokens = sum(wl.prompt_tokens) / n
    result.mean_output_tokens = sum(wl.output_tokens) / n
    result.mean_total_tokens = result.mean_prompt_tokens + result.mean_output_tokens
    if result.dtype in DTYPE_BYTES:
        result.kv_bytes_per_token = kv_bytes_per_token(model_folder, result.dtype)
        result.kv_bytes_per_request = result.mean_total_tokens * result.kv_bytes_per_token
        if result.pool_tokens is not None:
            result.pool_bytes = result.pool_tokens * result.kv_bytes_per_token
    result.peak_kv_mapped_bytes, result.peak_kv_used_bytes = peak.mapped_bytes, peak.used_bytes
    result.min_pages_free, result.peak_running = peak.min_pages_free, peak.running
    result.metric_samples = peak.samples
    result.pages_free_idle = before.get("sarathi:kv_cache_pages_free")

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    result.preemptions = delta("sarathi:num_preemptions_total")
    base = delta("sarathi:adaptivocab_base_prompt_tokens_total")
    if base > 0:
        result.server_prompt_reduction = (
            delta("sarathi:adaptivocab_prompt_tokens_saved_total") / base
        )


# -- report ---------------------------------------------------------------------------------
def _num(v: float) -> float | None:
    """NaN (no completed request) as None: JSON has no NaN."""
    return None if math.isnan(v) else v


def _change(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or not old:
        return None
    return round(100.0 * (new - old) / old, 1)


def compare(results: list[ConfigResult]) -> list[dict[str, Any]]:
    """Patch vs base per backend, as % change (negative = patch is smaller)."""
    rows = []
    by = {(r.tokenizer, r.backend): r for r in results}
    for backend in dict.fromkeys(r.backend for r in results):
        base, patch = by.get(("base", backend)), by.get(("patch", backend))
        if base is None or patch is None or not (base.completed and patch.completed):
            rows.append({"backend": backend, "note": "a configuration failed; no comparison"})
            continue
        rows.append(
            {
                "backend": backend,
                "tokens_per_request_%": _change(patch.mean_total_tokens, base.mean_total_tokens),
                "prompt_tokens_%": _change(patch.mean_prompt_tokens, base.mean_prompt_tokens),
                "output_tokens_%": _change(patch.mean_output_tokens, base.mean_output_tokens),
                "kv_bytes_per_request_%": _change(
                    patch.kv_bytes_per_request, base.kv_bytes_per_request
                ),
                "peak_kv_mapped_%": _change(patch.peak_kv_mapped_bytes, base.peak_kv_mapped_bytes),
                "peak_kv_used_%": _change(patch.peak_kv_used_bytes, base.peak_kv_used_bytes),
                "requests_per_s_%": _change(patch.requests_per_s, base.requests_per_s),
                "text_bytes_per_s_%": _change(patch.text_bytes_per_s, base.text_bytes_per_s),
                "ttft_median_%": _change(patch.ttft_median_ms, base.ttft_median_ms),
                "tpot_median_%": _change(patch.tpot_median_ms, base.tpot_median_ms),
            }
        )
    return rows


def _mib(v: float | None) -> float | None:
    return None if v is None else v / 2**20


def print_results(results: list[ConfigResult]) -> None:
    rows = []
    for r in results:
        if not r.completed:
            rows.append({"config": f"{r.tokenizer}/{r.backend}", "req/s": "FAILED"})
            continue
        rows.append(
            {
                "config": f"{r.tokenizer}/{r.backend}",
                "req/s": r.requests_per_s,
                "out tok/s": r.output_tokens_per_s,
                "text KB/s": r.text_bytes_per_s / 1000,
                "TTFT p50/p99 ms": f"{r.ttft_median_ms:.0f}/{r.ttft_p99_ms:.0f}",
                "TPOT p50/p99 ms": f"{r.tpot_median_ms:.1f}/{r.tpot_p99_ms:.1f}",
                "tok/req": r.mean_total_tokens,
                "KV MiB/req": _mib(r.kv_bytes_per_request),
                "peak KV mapped MiB": _mib(r.peak_kv_mapped_bytes),
                "peak KV used MiB": _mib(r.peak_kv_used_bytes),
                "pool MiB": _mib(r.pool_bytes),
                "slots": r.slots,
                "preempt": r.preemptions,
            }
        )
    print_table(rows, list(max(rows, key=len)))
    for r in results:
        if r.error:
            print(f"{r.tokenizer}/{r.backend}: {r.error}")


# -- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    m = p.add_argument_group("model and tokenizers")
    m.add_argument(
        "--preset",
        default="llama2-7b",
        help="Model shape with random weights (sarathi presets; default llama2-7b).",
    )
    m.add_argument(
        "--model-folder",
        default=None,
        help="Serve this base model folder instead of a preset ('demo': the embedded "
        "demo model); its tokenizer is the base tokenizer.",
    )
    m.add_argument(
        "--tokenizer",
        default=None,
        help="Base tokenizer folder for --preset (default: ../shared/assets/"
        "tokenizers/mistral-7b).",
    )
    m.add_argument(
        "--load-format",
        default=None,
        choices=("auto", "dummy"),
        help="Default: dummy for a preset, auto for --model-folder.",
    )
    m.add_argument(
        "--patch-tokenizer",
        default=None,
        help="A prebuilt patch tokenizer folder (skips the build; it should have "
        "been built without the held-out blocks).",
    )
    m.add_argument(
        "--num-swaps",
        type=int,
        default=10000,
        help="Tokens the patch swaps for n-grams (adaptivocab --num-tokens; 10000).",
    )
    m.add_argument("--max-ngram", type=int, default=3, help="Longest n-gram (3).")
    m.add_argument("--build-timeout", type=float, default=1800.0)
    w = p.add_argument_group("workload")
    w.add_argument(
        "--corpus",
        nargs="+",
        default=[os.path.join(ASSETS, "corpora", "linux-docs.txt.gz")],
        help="Domain text files (.gz ok; default: ../shared/assets linux-docs).",
    )
    w.add_argument(
        "--corpus-chars",
        type=int,
        default=0,
        help="Use only the first N characters of the corpus (0: all).",
    )
    w.add_argument("--heldout-fraction", type=float, default=0.1)
    w.add_argument(
        "--heldout-block-chars",
        type=int,
        default=65536,
        help="Size of the blocks the train / held-out split alternates over.",
    )
    w.add_argument("--num-requests", type=int, default=200)
    w.add_argument("--prompt-tokens", type=int, default=512, help="About this many base tokens.")
    w.add_argument(
        "--output-tokens",
        type=int,
        default=128,
        help="Reference continuation of about this many base tokens.",
    )
    w.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="Requests per second (default: inf, all at once).",
    )
    w.add_argument("--burstiness", type=float, default=1.0, help="Gamma shape; 1 is Poisson.")
    w.add_argument("--seed", type=int, default=0)
    s = p.add_argument_group("servers")
    s.add_argument(
        "--backends",
        default="vattention,paged",
        help="Comma-separated KV cache backends: vattention, paged.",
    )
    s.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="Extra flag for every server, repeatable (--server-arg=--max-num-seqs=64).",
    )
    s.add_argument(
        "--expected-request-tokens",
        type=int,
        default=None,
        help="The servers' typical request size in base tokens (default: the "
        "workload's mean; the patched server scales it by its ratio).",
    )
    s.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="Seconds a server may take to start (300).",
    )
    s.add_argument(
        "--run-timeout",
        type=float,
        default=1800.0,
        help="Seconds one configuration's run may take (1800).",
    )
    s.add_argument("--warmup", type=int, default=2, help="Warm-up requests before each run.")
    s.add_argument("--poll-interval", type=float, default=0.1, help="/metrics poll (s).")
    o = p.add_argument_group("output")
    o.add_argument(
        "--work-dir",
        default=None,
        help="Keep the model folder, patch tokenizer and server logs here "
        "(default: a temporary folder, removed at the end).",
    )
    o.add_argument("--json", default=None, help="Write the results as JSON here.")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKEND_ARGS]
    if unknown or not args.backends:
        p.error(f"unknown backends {unknown}; known: {', '.join(BACKEND_ARGS)}")
    if args.model_folder and args.tokenizer:
        p.error("--tokenizer is for --preset; a --model-folder brings its own tokenizer")
    if not 0 < args.heldout_fraction < 1 or args.request_rate <= 0 or args.burstiness <= 0:
        p.error("--heldout-fraction must be in (0, 1); --request-rate and --burstiness > 0")
    if min(args.num_requests, args.prompt_tokens, args.output_tokens) < 1:
        p.error("--num-requests, --prompt-tokens and --output-tokens must be positive")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM (e.g. from `timeout`) takes the Ctrl-C path, so every server is stopped. SIGINT
    # gets this handler too: asyncio.run's own one only cancels the running task, which a
    # request loop can absorb (the benchmark would go on to the next configuration).
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    work = args.work_dir or tempfile.mkdtemp(prefix="domain-serving-")
    os.makedirs(work, exist_ok=True)
    try:
        return run_benchmark(args, work)
    except KeyboardInterrupt:
        log("interrupted; every started server was stopped")
        return 130
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, work: str) -> int:
    from sarathi.transformers_utils.tokenizer import get_tokenizer

    for path in args.corpus:
        if not os.path.isfile(path):
            raise BenchmarkError(f"corpus {path} not found (pass --corpus)")
    log(f"reading corpus {', '.join(args.corpus)}")
    text = "\n\n".join(read_corpus(p) for p in args.corpus)
    if args.corpus_chars:
        text = text[: args.corpus_chars]
    train, heldout = split_corpus(text, args.heldout_fraction, args.heldout_block_chars)
    log(
        f"corpus: {len(text):,} characters, {len(heldout)} held-out blocks "
        f"({sum(map(len, heldout)):,} characters)"
    )
    model_folder = prepare_model_folder(args, work)
    base_tok = get_tokenizer(model_folder)
    if hasattr(base_tok, "to_base_ids"):
        raise BenchmarkError(f"{model_folder} is already patched; serve its base model")
    if args.patch_tokenizer:
        patch_dir = args.patch_tokenizer
        log(f"using the patch tokenizer {patch_dir}")
    else:
        log(
            f"building a patch tokenizer ({args.num_swaps} swaps, n <= {args.max_ngram}) on "
            f"{len(train):,} training characters"
        )
        patch_dir = build_patch_tokenizer(args, model_folder, train, work)
    del train
    patch_tok = get_tokenizer(model_folder, patch_dir)

    log(
        f"cutting {args.num_requests} requests of ~{args.prompt_tokens} + "
        f"~{args.output_tokens} base tokens from the held-out text"
    )
    texts = cut_requests(
        heldout, base_tok, args.num_requests, args.prompt_tokens, args.output_tokens, args.seed
    )
    workloads = {
        "base": tokenize_workload("base", base_tok, texts),
        "patch": tokenize_workload("patch", patch_tok, texts),
    }
    gaps = arrival_gaps(len(texts), args.request_rate, args.burstiness, args.seed)
    base_total = sum(
        a + b
        for a, b in zip(
            workloads["base"].prompt_tokens, workloads["base"].output_tokens, strict=True
        )
    )
    patch_total = sum(
        a + b
        for a, b in zip(
            workloads["patch"].prompt_tokens, workloads["patch"].output_tokens, strict=True
        )
    )
    expected = args.expected_request_tokens or max(1, round(base_total / len(texts)))
    log(
        f"workload: {base_total:,} base vs {patch_total:,} patch tokens "
        f"({100 * (1 - patch_total / base_total):.1f}% fewer)"
    )

    load_format = args.load_format or ("auto" if args.model_folder else "dummy")
    common = [
        "--model",
        model_folder,
        "--load-format",
        load_format,
        "--expected-request-tokens",
        str(expected),
    ]
    extra = [a for arg in args.server_arg for a in shlex.split(arg)]
    configs = [
        ServeConfig(
            tok,
            backend,
            common
            + BACKEND_ARGS[backend]
            + (["--patch-tokenizer", patch_dir] if tok == "patch" else [])
            + extra,
        )
        for backend in args.backends
        for tok in ("base", "patch")
    ]
    meta = {
        "config": {
            k: (str(v) if isinstance(v, float) and math.isinf(v) else v)
            for k, v in vars(args).items()
        },
        "model": {
            "folder": model_folder,
            "preset": None if args.model_folder else args.preset,
            "load_format": load_format,
        },
        "patch_tokenizer": {
            "folder": patch_dir,
            "built": not args.patch_tokenizer,
            "reduction_stats": getattr(patch_tok, "reduction_stats", None),
        },
        "workload": workload_stats(texts, workloads, expected),
    }
    results: list[ConfigResult] = []
    for cfg in configs:
        log_path = os.path.join(work, f"server-{cfg.tokenizer}-{cfg.backend}.log")
        results.append(
            run_config(cfg, workloads[cfg.tokenizer], texts, gaps, model_folder, args, log_path)
        )
        # After every configuration: a run cut short keeps what it measured.
        save_json(args.json, meta, results)
    print()
    print_results(results)
    print()
    comparison = compare(results)
    print_table(comparison, list(max(comparison, key=len)))
    return 0 if all(r.ok for r in results) else 1


def save_json(path: str | None, meta: dict[str, Any], results: list[ConfigResult]) -> None:
    write_json(
        path,
        {
            "info": run_info(),
            **meta,
            "results": [asdict(r) for r in results],
            "comparison": compare(results),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
