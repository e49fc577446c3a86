"""cuBLASLt through ctypes: a matmul's candidate algorithms, and the matmul run with one.

``F.linear`` runs whatever algorithm cuBLAS's heuristic ranks first. For the few-hundred-row
matmuls of decode and mixed steps another of cuBLASLt's candidates is often faster (on an
H200, Llama-3-8B's o projection at 256 rows: 16.1 us against 18.8; see
benchmarks/results/README.md), so ``matmul_table`` times them once, at startup, and keeps
the fastest. The library is the cuBLASLt that torch's CUDA build already loaded.
"""

from __future__ import annotations

import ctypes
import weakref
from dataclasses import dataclass

import torch

_COMPUTE_32F = 68  # cublasComputeType_t CUBLAS_COMPUTE_32F
_SCALE_32F = 0  # cudaDataType_t CUDA_R_32F
DATA_TYPES = {torch.bfloat16: 14, torch.float16: 2}  # CUDA_R_16BF, CUDA_R_16F
_DESC_TRANSA = 3  # cublasLtMatmulDescAttributes_t
_OP_T = 1  # cublasOperation_t
_PREF_MAX_WORKSPACE_BYTES = 1  # cublasLtMatmulPreferenceAttributes_t
_SUCCESS = 0
_LIBRARIES = ("libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so")


class Algo(ctypes.Structure):
    """cublasLtMatmulAlgo_t: an algorithm with its configuration (tile, stages, split-K)."""

    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _HeuristicResult(ctypes.Structure):
    _fields_ = [
        ("algo", Algo),
        ("workspace_size", ctypes.c_size_t),
        ("state", ctypes.c_int),
        ("waves", ctypes.c_float),
        ("reserved", ctypes.c_int * 4),
    ]


class CublasLtError(RuntimeError):
    """A cuBLASLt call failed (its status code in the message)."""


def load_library() -> ctypes.CDLL:
    """The cuBLASLt shared library, found by its soname (torch's CUDA build has loaded it, so
    the loader returns that copy); OSError when there is none."""
    errors = []
    for name in _LIBRARIES:
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise OSError("cuBLASLt not found: " + "; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    p, i, u64, i64, sz = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint64,
        ctypes.c_int64,
        ctypes.c_size_t,
    )
    pp = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "cublasLtCreate": [pp],
        "cublasLtDestroy": [p],
        "cublasLtMatmulDescCreate": [pp, i, i],
        "cublasLtMatmulDescDestroy": [p],
        "cublasLtMatmulDescSetAttribute": [p, i, p, sz],
        "cublasLtMatrixLayoutCreate": [pp, i, u64, u64, i64],
        "cublasLtMatrixLayoutDestroy": [p],
        "cublasLtMatmulPreferenceCreate": [pp],
        "cublasLtMatmulPreferenceDestroy": [p],
        "cublasLtMatmulPreferenceSetAttribute": [p, i, p, sz],
        "cublasLtMatmulAlgoGetHeuristic": [
            p,
            p,
            p,
            p,
            p,
            p,
            p,
            i,
            ctypes.POINTER(_HeuristicResult),
            ctypes.POINTER(i),
        ],
        "cublasLtMatmul": [p, p, p, p, p, p, p, p, p, p, p, p, ctypes.POINTER(Algo), p, sz, p],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = ctypes.c_int


@dataclass
class _Problem:
    """The descriptors of out [m, n] = x [m, k] @ weight [n, k]^T, all row-major. cuBLASLt is
    column-major, so it computes out^T = weight . x^T: A is the weight (k x n, transposed),
    B is x (k x m), and C = D is out (n x m)."""

    desc: ctypes.c_void_p
    a: ctypes.c_void_p
    b: ctypes.c_void_p
    c: ctypes.c_void_p


class CublasLt:
    """One cuBLASLt handle and the descriptors of the problems it has seen."""

    def __init__(self) -> None:
        self._lib = load_library()
        _declare(self._lib)
        handle = ctypes.c_void_p()
        self._check(self._lib.cublasLtCreate(ctypes.byref(handle)), "cublasLtCreate")
        self._handle = handle
        self._problems: dict[tuple[int, int, int, int], _Problem] = {}
        self._one = ctypes.c_float(1.0)
        self._zero = ctypes.c_float(0.0)
        weakref.finalize(self, _release, self._lib, handle, self._problems)

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != _SUCCESS:
            raise CublasLtError(f"{call} returned cuBLAS status {status}")

    def _problem(self, m: int, n: int, k: int, dtype: torch.dtype) -> _Problem:
        key = (m, n, k, DATA_TYPES[dtype])
        found = self._problems.get(key)
        if found is not None:
            return found
        lib, check, t = self._lib, self._check, key[3]
        desc = ctypes.c_void_p()
        check(
            lib.cublasLtMatmulDescCreate(ctypes.byref(desc), _COMPUTE_32F, _SCALE_32F), "DescCreate"
        )
        op = ctypes.c_int(_OP_T)
        check(
            lib.cublasLtMatmulDescSetAttribute(desc, _DESC_TRANSA, ctypes.byref(op), 4),
            "DescSetAttribute",
        )
        layouts = []
        for rows, cols in ((k, n), (k, m), (n, m)):
            layout = ctypes.c_void_p()
            check(
                lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), t, rows, cols, rows),
                "LayoutCreate",
            )
            layouts.append(layout)
        problem = _Problem(desc, *layouts)
        self._problems[key] = problem
        return problem

    def candidates(
        self, m: int, n: int, k: int, dtype: torch.dtype, count: int, workspace_bytes: int
    ) -> list[Algo]:
        """Up to ``count`` algorithms the heuristic offers for this problem, best-ranked
        first, each needing at most ``workspace_bytes`` of workspace."""
        p = self._problem(m, n, k, dtype)
        lib = self._lib
        pref = ctypes.c_void_p()
        self._check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "PreferenceCreate")
        try:
            limit = ctypes.c_uint64(workspace_bytes)
            self._check(
                lib.cublasLtMatmulPreferenceSetAttribute(
                    pref, _PREF_MAX_WORKSPACE_BYTES, ctypes.byref(limit), 8
                ),
                "PreferenceSetAttribute",
            )
            results = (_HeuristicResult * count)()
            found = ctypes.c_int(0)
            self._check(
                lib.cublasLtMatmulAlgoGetHeuristic(
                    self._handle,
                    p.desc,
                    p.a,
                    p.b,
                    p.c,
                    p.c,
                    pref,
                    count,
                    results,
                    ctypes.byref(found),
                ),
                "AlgoGetHeuristic",
            )
        finally:
            lib.cublasLtMatmulPreferenceDestroy(pref)
        return [
            r.algo
            for r in results[: found.value]
            if r.state == _SUCCESS and r.workspace_size <= workspace_bytes
        ]

    def matmul(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        out: torch.Tensor,
        algo: Algo,
        workspace: torch.Tensor,
    ) -> None:
        """out = x @ weight^T with ``algo``, on the current stream. x [m, k], weight [n, k] and
        out [m, n] are contiguous, in one of DATA_TYPES, and 256-byte aligned (the
        heuristic's default assumption)."""
        m, k = x.shape
        n = weight.shape[0]
        p = self._problem(m, n, k, x.dtype)
        status = self._lib.cublasLtMatmul(
            self._handle, p.desc, ctypes.byref(self._one), weight.data_ptr(), p.a, x.data_ptr(),
            p.b, ctypes.byref(self._zero), out.data_ptr(), p.c, out.data_ptr(), p.c,
            ctypes.byref(algo), workspace.data_ptr(), workspace.numel(),
            torch.cuda.current_stream(x.device).cuda_stream,
        )  # fmt: skip
        self._check(status, "cublasLtMatmul")


def _release(lib: ctypes.CDLL, handle: ctypes.c_void_p, problems: dict) -> None:
    for p in problems.values():
        lib.cublasLtMatmulDescDestroy(p.desc)
        for layout in (p.a, p.b, p.c):
            lib.cublasLtMatrixLayoutDestroy(layout)
    lib.cublasLtDestroy(handle)
