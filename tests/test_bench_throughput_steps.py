"""benchmarks/throughput.py's step table: the engine's steps as scheduled, grouped by kind,
each group's wall time beside the floor of its steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from throughput import StepRecord, record_steps, step_breakdown, stop_recording  # noqa: E402

from sarathi import LLM, SamplingParams  # noqa: E402
from sarathi.model_executor.model_shape import ModelShape  # noqa: E402

SHAPE = ModelShape(
    architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=128,
    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5,
    rope_theta=1e4, rope_scaling=None, max_position_embeddings=256, tie_word_embeddings=False,
    qkv_bias=False, qk_norm=False, sliding_windows=(None, None), torch_dtype=None,
)  # fmt: skip


def test_steps_are_grouped_by_kind_with_their_wall_time_and_floor() -> None:
    records = [
        StepRecord(0.0, 0, 0, ((0, 32),)),  # prefill only
        StepRecord(1.0, 3, 90, ((0, 8),)),  # mixed
        StepRecord(3.0, 70, 7000, ()),  # decode, batch 64-127
        StepRecord(4.0, 70, 7070, ()),
        StepRecord(6.0, 2, 40, ()),  # decode, batch 1-63
    ]
    rows = step_breakdown(SHAPE, 2, records, end=6.5, bw=1e9, mm=1e12)
    by_kind = {r["kind"]: r for r in rows}
    assert [r["kind"] for r in rows] == ["prefill", "mixed", "decode 1-63", "decode 64-127"]
    assert by_kind["decode 64-127"]["steps"] == 2
    assert by_kind["decode 64-127"]["seconds"] == pytest.approx(3.0)
    assert by_kind["decode 1-63"]["seconds"] == pytest.approx(0.5)  # until the run's end
    assert sum(r["seconds"] for r in rows) == pytest.approx(6.5)
    # At 1 GB/s every step here is bound by its bytes: the weights plus the keys it reads.
    weights = 2 * (2 * (64 * (64 + 64) + 64 * 64 + 3 * 64 * 128) + 64 * 100)
    kv = 2 * 2 * 32 * 2
    decode = by_kind["decode 1-63"]
    assert decode["floor_s"] == pytest.approx((weights + kv * 40) / 1e9)
    assert decode["frac_of_floor"] == pytest.approx(decode["floor_s"] / 0.5)


def test_recording_sees_every_step_with_work_and_then_stops() -> None:
    llm = LLM("demo", max_num_seqs=4, chunk_size=16)
    records = record_steps(llm)
    try:
        llm.generate([[5, 6, 7], [8, 9]], SamplingParams(max_tokens=3, ignore_eos=True),
                     use_tqdm=False)
    finally:
        stop_recording(llm)
    assert records[0].chunks == ((0, 3), (0, 2)) and records[0].decodes == 0
    assert all(r.decodes == 2 and not r.chunks for r in records[1:])
    assert len(records) == 3  # the prompts' step sampled each first token; two decodes follow
    assert records[1].decode_context == 4 + 3  # each sequence's context, its new token included
    llm.generate([[5, 6]], SamplingParams(max_tokens=2), use_tqdm=False)
    assert len(records) == 3
