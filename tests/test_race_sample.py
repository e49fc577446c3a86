"""The fused draw (race_sample.py) against the sampler's PyTorch path (GPU): the same
distribution, greedy rows identical, masked tokens never drawn, and the sampler falling
back to PyTorch where rows need their own generator or truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarathi.model_executor.layers import race_sample
from sarathi.model_executor.layers.sampler import SampleBatch, Sampler, SlotOptions, SpecialRow
from sarathi.sampling_params import SamplingParams

pytestmark = pytest.mark.gpu

VOCAB = 50_000  # several splits per row
HOT = [5, 2048, 12_345, 24_000, 37_777, 49_999]  # in different splits
VALUES = [2.0, 1.5, 1.0, 0.5, 0.0, -1.0]


def _logits(rows: int) -> torch.Tensor:
    logits = torch.full((rows, VOCAB), -30.0, device="cuda")
    logits[:, HOT] = torch.tensor(VALUES, device="cuda")
    return logits


def _sampler(rows: int, params: SamplingParams, fused: bool) -> tuple[Sampler, SampleBatch]:
    options = SlotOptions(rows + 3, torch.device("cuda"))
    slots = np.arange(3, rows + 3)  # not the rows' own numbers
    for slot in slots:
        options.set(int(slot), params, seeded=False)
    options.commit()
    last = torch.full((rows + 3,), -1, dtype=torch.long, device="cuda")
    sampler = Sampler({0}, options, last, seed=1, fused=fused)
    return sampler, SampleBatch(torch.from_numpy(slots).cuda(), slots, [])


def _frequencies(fused: bool, temperature: float, draws: int) -> np.ndarray:
    rows = 64
    sampler, batch = _sampler(rows, SamplingParams(temperature=temperature), fused)
    counts = np.zeros(VOCAB)
    logits = _logits(rows).bfloat16()  # as the model hands them over
    for _ in range(draws):
        tokens = sampler.finish(sampler.launch(logits, batch)).token_ids
        np.add.at(counts, tokens, 1)
    return counts / counts.sum()


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_same_distribution_as_the_reference(temperature: float) -> None:
    expected = np.zeros(VOCAB)
    expected[HOT] = torch.softmax(torch.tensor(VALUES) / temperature, 0).numpy()
    fused = _frequencies(True, temperature, 300)  # 19,200 draws
    reference = _frequencies(False, temperature, 300)
    assert 0.5 * np.abs(fused - expected).sum() < 0.02
    assert 0.5 * np.abs(reference - expected).sum() < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_rows_take_the_argmax_and_every_row_lands_at_its_slot(dtype: torch.dtype) -> None:
    rows = 40
    logits = torch.randn(rows, VOCAB, device="cuda").to(dtype)
    logits[::4, 100] = logits[::4, 40_000] = 50.0  # a tie: the lower id wins, as in torch
    temps = torch.tensor([0.0 if i % 2 == 0 else 1.0 for i in range(rows)], device="cuda")
    slots = torch.arange(rows, device="cuda").flip(0)
    last = torch.full((rows,), -1, dtype=torch.long, device="cuda")
    tokens = race_sample.race_sample(logits, temps, slots, last, seed=7)  # temps by slot
    greedy = temps[slots] == 0
    assert torch.equal(tokens[greedy], logits.argmax(-1)[greedy])
    assert torch.equal(last[slots], tokens)
    again = race_sample.race_sample(logits, temps, slots, last, seed=7)
    assert torch.equal(again, tokens)  # the seed alone picks the noise


def test_masked_tokens_are_never_drawn() -> None:
    rows = 96
    logits = torch.randn(rows, VOCAB, device="cuda")
    allowed = torch.zeros(VOCAB, dtype=torch.bool, device="cuda")
    allowed[HOT] = True
    logits[:, ~allowed] = float("-inf")
    temps = torch.full((rows,), 5.0, device="cuda")
    slots = torch.arange(rows, device="cuda")
    last = torch.empty(rows, dtype=torch.long, device="cuda")
    for seed in range(50):
        tokens = race_sample.race_sample(logits, temps, slots, last, seed)
        assert allowed[tokens].all()


def test_rows_with_their_own_generator_or_truncation_take_the_reference() -> None:
    sampler, batch = _sampler(4, SamplingParams(temperature=1.0), fused=True)
    assert sampler._plain(batch)
    seeded = SpecialRow(
        0, SamplingParams(temperature=1.0, seed=3), torch.Generator("cuda"), None, 0, False
    )
    assert not sampler._plain(SampleBatch(batch.slots, batch.host_slots, [seeded]))
    sampler, batch = _sampler(4, SamplingParams(temperature=1.0, top_p=0.9), fused=True)
    assert not sampler._plain(batch)
