"""The Gluon prefill kernel compiles for Hopper (sm_90) on any machine with Triton: a CPU
check of what the GPU tests (``test_gluon_prefill.py``) run, that its shared memory fits
one program per SM."""

from __future__ import annotations

import pytest

pytest.importorskip("triton.experimental.gluon", reason="needs Triton with Gluon")

# Opt-in shared memory per block on the H100 and H200 (227 KiB).
HOPPER_SHARED_BYTES = 232_448


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_gluon_prefill_compiles_for_hopper(dtype: str) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    from sarathi.model_executor.attention import gluon_prefill

    kernel = gluon_prefill._prefill_kernel
    pointers = {"Q": f"*{dtype}", "K": f"*{dtype}", "V": f"*{dtype}", "Out": f"*{dtype}"}
    constexprs = {"GROUP": 4, "BLOCK_N": 128, "HEAD_DIM": 128, "STAGES": 3, "TILED": True,
                  "RELEASE": True}
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        elif name[0].isupper():  # the chunk and tile tables
            signature[name] = "*i64"
        else:
            signature[name] = "fp32" if name == "scale_log2" else "i32"
    src = GluonASTSource(kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert "wgmma.mma_async" in compiled.asm["ptx"]
    assert compiled.metadata.shared <= HOPPER_SHARED_BYTES
