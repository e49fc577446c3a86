"""Helpers shared by the benchmark scripts: run metadata and result files, the card's ceilings
and what a model shape costs per token."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sarathi.model_executor.model_shape import ModelShape


def run_info() -> dict[str, Any]:
    """Who, where and what: card, commit, command and date for a recorded run."""
    import torch

    # A copy of the tree on another machine may carry no .git or a stale one: the caller's
    # BENCH_COMMIT, when set, names the commit that really ran.
    commit = os.environ.get("BENCH_COMMIT")
    if not commit:
        try:
            commit = (
                subprocess.run(
                    ["git", "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                    cwd=os.path.dirname(__file__),
                    check=False,
                ).stdout.strip()
                or "unknown"
            )
        except OSError:
            commit = "unknown"
    card = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else (f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    )
    # The engine's switches (SARATHI_FUSED, SARATHI_GEMV) change what a command measures.
    switches = " ".join(
        f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SARATHI_")
    )
    return {
        "card": card,
        "commit": commit,
        "command": " ".join(
            ([switches] if switches else []) + [os.path.basename(sys.executable)] + sys.argv
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }


def bench_ms(fn: Callable[[], object], warmup: int = 3, reps: int = 20, inner: int = 1) -> float:
    """Median milliseconds of one ``fn`` call on the current CUDA stream, timed with CUDA
    events around ``inner`` back-to-back calls: with ``inner`` > 1 the host queues launches
    ahead, so a kernel shorter than its launch cost is timed on the GPU, not on the host."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    times.sort()
    return times[len(times) // 2]


def graph_us(calls: list[Callable[[], object]]) -> float:
    """Microseconds per call, the calls captured once each into one CUDA graph and replayed:
    for kernels shorter than their Python launch path, which timing launches would time
    instead. Give calls on different data where the data would fit the L2 cache."""
    import torch

    for call in calls[:1] * 2:  # compile, and settle allocations, off the capture
        call()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        calls[0]()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    return bench_ms(graph.replay, warmup=2, reps=15) * 1e3 / len(calls)


# Rounds of each ceiling measurement, the best kept: a card's rate moved by up to 10% between
# runs on one machine (copy 3,837-4,258 GB/s), and a low reading loosens every bound that
# divides by it, so each ceiling is the best median of several rounds.
CEILING_ROUNDS = 3


def copy_bandwidth(rounds: int = CEILING_ROUNDS) -> float:
    """Bytes per second of a 2 GiB device-to-device copy (read + write counted): the best
    of ``rounds`` medians."""
    import torch

    src = torch.randn(2**30 // 2, dtype=torch.bfloat16, device="cuda").repeat(2)
    dst = torch.empty_like(src)
    ms = min(bench_ms(lambda: dst.copy_(src)) for _ in range(rounds))
    return 2 * src.numel() * src.element_size() / (ms / 1e3)


def matmul_rate(rounds: int = CEILING_ROUNDS) -> float:
    """bf16 FLOP/s of an 8192^3 matmul on random data: the best of ``rounds`` medians."""
    import torch

    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    ms = min(bench_ms(lambda: a @ b, reps=30) for _ in range(rounds))
    return 2 * n**3 / (ms / 1e3)


def sustained_matmul_rate(seconds: float = 6.0) -> float:
    """bf16 FLOP/s of 8192^3 matmuls run back to back for ``seconds``, timed over the second
    half: the rate a card holds once its power limit has pulled its clock down. An H200
    (700 W) runs a few of them at its 1,980 MHz boost clock, which ``matmul_rate`` times,
    and settles near 1,600 MHz within a second of steady matmuls, as the mixed steps of a
    long run do. What a workload gets lies between the two: its other kernels draw less."""
    import torch

    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    calls = max(1, int(seconds / 2 / (2 * n**3 / matmul_rate(rounds=1))))
    for _ in range(calls):  # the first half: the clock comes down
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        a @ b
    end.record()
    end.synchronize()
    return calls * 2 * n**3 / (start.elapsed_time(end) / 1e3)


@dataclass(frozen=True)
class Costs:
    """What a model shape costs per token: matmul parameters of the layers and of the LM
    head, bytes of weights a decode step reads, KV bytes per token, and the query width and
    layers (for attention FLOPs)."""

    p_layers: int
    p_head: int
    weight_bytes: int
    kv: int
    q: int
    layers: int

    def attention_flops(self, cached: int, n: int) -> float:
        """Causal attention FLOPs of ``n`` tokens after ``cached`` ones."""
        return 2 * 2 * self.layers * self.q * (n * cached + n * (n + 1) / 2)


def costs(shape: ModelShape, elem: int) -> Costs:
    """A shape's costs per token, for weights and activations of ``elem`` bytes."""
    s = shape
    q, kvd = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    per_layer = (
        s.hidden_size * (q + 2 * kvd) + q * s.hidden_size + 3 * s.hidden_size * s.intermediate_size
    )
    p_layers = s.num_layers * per_layer
    p_head = s.hidden_size * s.vocab_size
    weight_bytes = (p_layers + p_head) * elem
    return Costs(p_layers, p_head, weight_bytes, 2 * s.num_layers * kvd * elem, q, s.num_layers)


def add_engine_arg(ap: argparse.ArgumentParser) -> None:
    """``--engine-arg KEY=VALUE`` (repeatable): an extra keyword for ``LLM(...)``."""
    ap.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra engine option (repeatable), e.g. kv_layout=per_layer.",
    )


def add_server_arg(ap: argparse.ArgumentParser) -> None:
    """``--server-arg FLAG`` (repeatable): an extra flag for ``start_demo_server``."""
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="Extra flag for the server (repeatable), e.g. --server-arg=--model=M.",
    )


def engine_args(pairs: list[str]) -> dict[str, Any]:
    """``--engine-arg`` values as engine keywords (all-digit values become ints)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def require_cuda(script: str, count: int = 1) -> None:
    """Exit with one line when the machine has fewer than ``count`` CUDA GPUs: a GPU benchmark
    run elsewhere otherwise died deep in its first CUDA call with a torch traceback."""
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < count:
        need = "a CUDA GPU" if count == 1 else f"{count} CUDA GPUs"
        raise SystemExit(f"{script}: needs {need}, found {found}")


def sync() -> None:
    """Wait for the GPU, where there is one (before and after a timed region)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


@dataclass
class GpuTimeline:
    """GPU activity in a profiler trace: per kernel (or copy) name, the time each call added
    to the span in which the GPU was busy, and the time nothing ran. Kernels launched with
    programmatic dependent launch start before their predecessor ends and wait inside, so
    their durations overlap and do not add up; what a call adds is how far its end reaches
    past the end of everything before it."""

    added_us: dict[str, list[float]]
    busy_us: float
    idle_us: float


def gpu_timeline(events: list[Any]) -> GpuTimeline:
    """``events``: a torch profiler's ``prof.events()`` (CUDA activities are used)."""
    import torch

    acts = sorted(
        (e for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
        key=lambda e: e.time_range.start,
    )
    added: dict[str, list[float]] = {}
    busy = idle = 0.0
    reach = None
    for e in acts:
        start, end = e.time_range.start, e.time_range.end
        if reach is not None and start > reach:
            idle += start - reach
        gain = end - start if reach is None else max(0.0, end - max(start, reach))
        added.setdefault(e.name, []).append(gain)
        busy += gain
        reach = end if reach is None else max(reach, end)
    return GpuTimeline(added, busy, idle)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_demo_server(flags: list[str]) -> tuple[subprocess.Popen, str]:
    """``python -m sarathi serve`` on a free loopback port (the demo model unless ``flags``
    name one): the process and its URL, once it says it is serving. Logs at warning level,
    so the unread pipe never fills."""
    import re

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarathi", "serve", "--port", "0", "--log-level", "warning", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"on (http://\S+)", line)
        if " serving " in line and m:
            return proc, m.group(1)
    raise SystemExit(f"the server did not start (exit {proc.wait()})")
