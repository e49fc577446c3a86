"""Where the gate|up matmul with SiLU-and-mul in its epilogue runs (the GPU side is
tests/test_fused_layers.py): only with enough rows, and only where its output tiles fill
the SMs' last round (benchmarks/gated_matmul.py measured it slower elsewhere)."""

from __future__ import annotations

import torch

from sarathi.model_executor.layers.gated_matmul import MIN_ROWS, TILING, gated_config, takes_gated

H200_SMS = 132


def test_prefill_sized_steps_of_large_models_take_it() -> None:
    assert gated_config(1024, 14336, H200_SMS) == TILING  # Llama-3-8B: 896 tiles, 7 rounds
    assert gated_config(1088, 11008, H200_SMS) == TILING  # Llama-2-7B
    assert gated_config(2048, 3072, H200_SMS) == TILING  # Qwen3-0.6B: 384 tiles, 3 rounds


def test_few_rows_or_a_poorly_filled_last_round_keep_cublas() -> None:
    assert gated_config(MIN_ROWS - 1, 14336, H200_SMS) is None
    assert gated_config(256, 14336, H200_SMS) is None  # decode batches
    assert gated_config(1024, 3072, H200_SMS) is None  # 192 tiles: 0.73 of two rounds
    assert gated_config(768, 3072, H200_SMS) is None  # 144 tiles: 0.55


def test_not_on_the_cpu() -> None:
    x = torch.randn(1024, 64, dtype=torch.bfloat16)
    assert not takes_gated(x, torch.randn(2 * 4096, 64, dtype=torch.bfloat16))
