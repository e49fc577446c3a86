"""The per-shape matmul table (sarathi/model_executor/layers/matmul_table.py): what it records
while graphs are captured, what it keeps after timing, and when it leaves a matmul to
F.linear. On the CPU with a stand-in BLAS and timer; on the GPU against cuBLASLt itself."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from sarathi.model_executor.layers import matmul_table
from sarathi.model_executor.layers.blaslt import Algo
from sarathi.model_executor.layers.matmul_table import MARGIN, MatmulTable


@pytest.fixture(autouse=True)
def _cpu_alignment(monkeypatch, request) -> None:
    """CPU tensors start 64-byte aligned, CUDA ones 512: the CPU tests ask the CPU's."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setattr(matmul_table, "ALIGN", 64)


def _algo(tag: int) -> Algo:
    algo = Algo()
    algo.data[0] = tag
    return algo


class FakeBlas:
    """Offers algorithms tagged 1..n; its matmul is torch's, and it remembers the last tag."""

    def __init__(self, tags: list[int]) -> None:
        self.tags = tags
        self.last: int | None = None
        self.calls = 0

    def candidates(self, m, n, k, dtype, count, workspace_bytes):
        return [_algo(t) for t in self.tags[:count]]

    def matmul(self, x, weight, out, algo, workspace):
        self.last = int(algo.data[0])
        self.calls += 1
        out.copy_(x @ weight.t())


def _timer(blas: FakeBlas, seconds: dict[int | None, float]):
    """A timer that runs the pass once and reads which algorithm it used (None: F.linear)."""

    def time(run):
        blas.last = None
        run()
        return seconds[blas.last]

    return time


def _weights(n: int, k: int, count: int = 3) -> list[torch.Tensor]:
    return [torch.randn(n, k, dtype=torch.bfloat16) for _ in range(count)]


def test_a_candidate_is_kept_only_where_it_beats_f_linear_by_the_margin() -> None:
    blas = FakeBlas([1, 2])
    table = MatmulTable(blas, _timer(blas, {None: 1.0, 1: 0.99, 2: MARGIN * 0.9}))
    ws = _weights(48, 32)
    x = torch.randn(8, 32, dtype=torch.bfloat16)
    with table.recording():
        for w in ws:
            assert table.linear(x, w) is None  # recording leaves the matmul to F.linear
    table.tune()
    assert int(table.chosen[(8, 48, 32, torch.bfloat16)].data[0]) == 2
    assert table.report.shapes == 1 and table.report.chosen == 1
    out = table.linear(x, ws[0])
    assert out is not None and blas.last == 2
    torch.testing.assert_close(out, F.linear(x, ws[0]))


def test_a_shape_no_candidate_beats_stays_on_f_linear() -> None:
    blas = FakeBlas([1])
    table = MatmulTable(blas, _timer(blas, {None: 1.0, 1: MARGIN * 1.01}))
    w = _weights(16, 32, 1)[0]
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with table.recording():
        table.linear(x, w)
    table.tune()
    assert table.chosen[(4, 16, 32, torch.bfloat16)] is None
    blas.calls = 0
    assert table.linear(x, w) is None and blas.calls == 0
    assert table.report.chosen == 0


def test_unrecorded_shapes_and_unfit_operands_go_to_f_linear() -> None:
    blas = FakeBlas([1])
    table = MatmulTable(blas, _timer(blas, {None: 1.0, 1: 0.5}))
    w = _weights(16, 32, 1)[0]
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with table.recording():
        table.linear(x, w)
    table.tune()
    assert table.linear(torch.randn(5, 32, dtype=torch.bfloat16), w) is None  # other rows
    assert table.linear(torch.randn(32, 4, dtype=torch.bfloat16).t(), w) is None  # strided
    assert table.linear(x.float(), w.float()) is None  # float32 is never recorded
    assert table.linear(x.unsqueeze(0), w) is None  # not 2-D
    buf = torch.empty(4 * 32 + 8, dtype=torch.bfloat16)
    shifted = buf[8:].view(4, 32)  # 16 bytes past an allocation's start
    shifted.copy_(x)
    assert shifted.data_ptr() % matmul_table.ALIGN
    assert table.linear(shifted, w) is None
    assert table.linear(x, w) is not None


def test_each_shape_is_timed_once_over_every_weight_it_was_recorded_with() -> None:
    blas = FakeBlas([1])
    passes: list[int] = []

    def timer(run):
        blas.calls = 0
        run()
        passes.append(blas.calls)
        return 1.0

    table = MatmulTable(blas, timer)
    ws = _weights(16, 32, 4)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    for _ in range(2):  # a second graph of the same shape: nothing more to time
        with table.recording():
            for w in ws + ws:  # each weight twice: timed once
                table.linear(x, w)
        table.tune()
    assert passes == [0, 4]  # F.linear's pass (no BLAS calls), then the candidate's
    assert table.report.shapes == 1


def test_without_cublaslt_the_table_stays_empty(monkeypatch, caplog) -> None:
    def missing() -> None:
        raise OSError("cuBLASLt not found: libcublasLt.so.13: cannot open")

    monkeypatch.setattr(matmul_table, "CublasLt", missing)
    table = MatmulTable()
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    w = _weights(16, 32, 1)[0]
    with table.recording():
        table.linear(x, w)
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        table.tune()
    assert "F.linear" in caplog.text and "cuBLASLt not found" in caplog.text
    assert table.chosen == {} and table.linear(x, w) is None


@pytest.mark.gpu
def test_every_cublaslt_candidate_matches_f_linear() -> None:
    from sarathi.model_executor.layers.blaslt import CublasLt

    blas = CublasLt()
    workspace = torch.empty(matmul_table.WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
    for dtype in (torch.bfloat16, torch.float16):
        for m, n, k in ((3, 40, 64), (256, 4096, 4096), (192, 1024, 3072)):
            x = torch.randn(m, k, dtype=dtype, device="cuda")
            w = torch.randn(n, k, dtype=dtype, device="cuda") / k**0.5
            want = F.linear(x, w)
            algos = blas.candidates(m, n, k, dtype, 8, matmul_table.WORKSPACE_BYTES)
            assert algos, (m, n, k, dtype)
            for algo in algos:
                out = torch.full_like(want, float("nan"))
                blas.matmul(x, w, out, algo, workspace)
                torch.testing.assert_close(out, want, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
def test_an_engine_tunes_its_graphs_matmuls_and_matches_eager() -> None:
    from sarathi import LLM, SamplingParams

    def run(enforce_eager: bool) -> tuple[list[list[int]], MatmulTable | None]:
        llm = LLM("demo", device="cuda", dtype="bfloat16", enforce_eager=enforce_eager,
                  max_num_seqs=8, chunk_size=64)
        prompts = [[5 + i + j for j in range(3 + 17 * i)] for i in range(6)]
        params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
        outs = llm.generate(prompts, params)
        table = llm.engine.executor.worker.runner.model.kernels.matmuls
        llm.engine.shutdown()
        return [o.outputs[0].token_ids for o in outs], table

    eager, untouched = run(True)
    graphed, table = run(False)
    assert untouched is not None and untouched.report.shapes == 0  # eager: nothing timed
    assert table is not None and table.report.shapes > 0
    assert graphed == eager
