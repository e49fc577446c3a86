"""The matmul algorithm for each step shape, chosen by timing once, at startup.

While the CUDA graphs are captured (``worker/cuda_graph.py``), each graph's first warm-up
pass records the matmuls its forward runs (rows, weight shape, dtype, and the weights
themselves); ``tune`` then times ``F.linear`` against cuBLASLt's candidate algorithms on
exactly those weights (one pass over the model's layers, as the step reads them) and keeps a
candidate only where it beats ``F.linear`` by ``MARGIN``. The graph captured next takes the
chosen algorithm; every other matmul, and every matmul of an eager engine, stays on
``F.linear``. The choice depends only on the shape, so a step replays the same algorithms
whatever its contents.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from sarathi.model_executor.layers.blaslt import DATA_TYPES, Algo, CublasLt, CublasLtError

logger = logging.getLogger("sarathi")

MARGIN = 0.97  # a candidate must take at most this share of F.linear's time
CANDIDATES = 12  # heuristic candidates timed per shape
WORKSPACE_BYTES = 32 * 2**20
ALIGN = 256  # bytes; the alignment cuBLASLt's heuristic assumes for every matrix

Key = tuple[int, int, int, torch.dtype]  # rows, out features, in features, dtype


class Blas(Protocol):
    """What the table needs of a BLAS library (``CublasLt``; tests substitute their own)."""

    def candidates(
        self, m: int, n: int, k: int, dtype: torch.dtype, count: int, workspace_bytes: int
    ) -> list[Algo]: ...

    def matmul(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        out: torch.Tensor,
        algo: Algo,
        workspace: torch.Tensor,
    ) -> None: ...


Timer = Callable[[Callable[[], None]], float]


def graph_seconds(run: Callable[[], None], passes: int = 3) -> float:
    """Seconds ``run``'s kernels take: the fastest of ``passes`` replays of a CUDA graph of
    it (a graph, because a pass of small matmuls launched from Python is bound by the
    launches)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        run()
        graph.capture_begin()
        run()
        graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    best = float("inf")
    for _ in range(passes):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


@dataclass
class TuneReport:
    shapes: int = 0  # shapes timed
    chosen: int = 0  # of them, where a cuBLASLt candidate won
    seconds: float = 0.0
    saved: float = 0.0  # seconds a pass over each chosen shape's weights saves, summed


@dataclass
class MatmulTable:
    """The chosen algorithm per shape (None: ``F.linear``); ``blas`` is made on first tune."""

    blas: Blas | None = None
    timer: Timer = graph_seconds
    chosen: dict[Key, Algo | None] = field(default_factory=dict)
    report: TuneReport = field(default_factory=TuneReport)
    # While recording: each shape's weights by address; after, the shapes still to tune.
    _seen: dict[Key, dict[int, torch.Tensor]] | None = field(default=None, repr=False)
    _pending: dict[Key, dict[int, torch.Tensor]] = field(default_factory=dict, repr=False)
    _workspace: torch.Tensor | None = None
    _disabled: str = ""  # why cuBLASLt could not be used

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Within: ``linear`` notes each matmul it is asked for (and runs F.linear)."""
        self._seen = {}
        try:
            yield
        finally:
            seen, self._seen = self._seen, None
            self._pending = seen

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
        """x @ weight^T with the chosen algorithm; None where the caller runs F.linear (no
        algorithm chosen for this shape, or operands cuBLASLt's pick cannot take)."""
        if x.dim() != 2:
            return None
        key = (x.shape[0], weight.shape[0], weight.shape[1], x.dtype)
        if self._seen is not None:
            if x.dtype in DATA_TYPES and weight.dtype == x.dtype:
                self._seen.setdefault(key, {})[weight.data_ptr()] = weight
            return None
        algo = self.chosen.get(key)
        if algo is None or not _fits(x, weight):
            return None
        out = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
        assert self.blas is not None and self._workspace is not None
        self.blas.matmul(x, weight, out, algo, self._workspace)
        return out

    def tune(self) -> None:
        """Choose an algorithm for every shape recorded since the last call."""
        todo = {k: w for k, w in self._pending.items() if k not in self.chosen}
        self._pending = {}
        if not todo or self._disabled:
            return
        if self.blas is None:
            try:
                self.blas = CublasLt()
            except OSError as e:
                self._disabled = str(e)
                logger.warning("matmuls stay on F.linear: %s", e)
                return
        t0 = time.perf_counter()
        for key, weights in todo.items():
            self.chosen[key] = self._choose(key, list(weights.values()))
        self.report.seconds += time.perf_counter() - t0

    def _choose(self, key: Key, weights: list[torch.Tensor]) -> Algo | None:
        rows, n, k, dtype = key
        assert self.blas is not None
        device = weights[0].device
        if self._workspace is None:
            self._workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        workspace = self._workspace
        x = torch.randn(rows, k, dtype=dtype, device=device)
        out = torch.empty(rows, n, dtype=dtype, device=device)
        ok = [w for w in weights if _fits(x, w)]
        self.report.shapes += 1
        if not ok:
            return None

        def reference() -> None:
            for w in ok:
                torch.matmul(x, w.t(), out=out)

        base = self.timer(reference)
        best, best_time = None, base * MARGIN
        blas = self.blas
        for algo in blas.candidates(rows, n, k, dtype, CANDIDATES, WORKSPACE_BYTES):

            def candidate(algo: Algo = algo) -> None:
                for w in ok:
                    blas.matmul(x, w, out, algo, workspace)

            try:
                seconds = self.timer(candidate)
            except CublasLtError as e:  # a candidate the library offers but cannot run here
                logger.debug("cuBLASLt candidate skipped for %s: %s", key, e)
                continue
            if seconds < best_time:
                best, best_time = algo, seconds
        if best is not None:
            self.report.chosen += 1
            self.report.saved += base - best_time
        return best


def _fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.is_contiguous()
        and weight.is_contiguous()
        and x.data_ptr() % ALIGN == 0
        and weight.data_ptr() % ALIGN == 0
        and weight.dtype == x.dtype
    )
