"""The CPU reference sampler's semantics, on small logit tensors (vLLM's rules)."""

import numpy as np
import pytest
import torch

from sarathi import SamplingParams
from sarathi.model_executor.layers.sampler import SampleBatch, Sampler, SlotOptions, _top_k_top_p


def _kept(logits: list[float], top_p: float, top_k: int = 0) -> list[int]:
    out = _top_k_top_p(
        torch.tensor([logits]), torch.tensor([float(top_k)]), torch.tensor([top_p])
    )
    return torch.isfinite(out[0]).nonzero().flatten().tolist()


@pytest.mark.parametrize("top_p,kept", [(0.5, 2), (0.75, 3), (0.76, 4), (0.25, 1), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_that_reaches_it(top_p, kept):
    # Four equally likely tokens: 0.5 of the mass is two of them, not three.
    assert len(_kept([0.0, 0.0, 0.0, 0.0], top_p)) == kept


def test_top_p_one_keeps_tokens_of_tiny_probability():
    # The head's cumulative sum rounds to 1 long before the tail.
    assert len(_kept([30.0] + [0.0] * 999 + [-5.0], 1.0)) == 1001


def test_top_p_draws_from_the_kept_set_only():
    rows = 20000
    options = SlotOptions(rows, torch.device("cpu"))
    for i in range(rows):
        options.set(i, SamplingParams(top_p=0.5), False)
    options.commit()
    sampler = Sampler({99}, options, torch.zeros(rows, dtype=torch.long), seed=0)
    slots = np.arange(rows)
    pending = sampler.launch(torch.zeros(rows, 4), SampleBatch(torch.from_numpy(slots), slots, []))
    freq = np.bincount(pending.tokens.numpy(), minlength=4) / rows
    assert freq[2:].sum() == 0
    np.testing.assert_allclose(freq[:2], [0.5, 0.5], atol=0.02)


def _freq(params: SamplingParams, logits: list[float], rows: int = 20000) -> np.ndarray:
    options = SlotOptions(rows, torch.device("cpu"))
    for i in range(rows):
        options.set(i, params, False)
    options.commit()
    sampler = Sampler({99}, options, torch.zeros(rows, dtype=torch.long), seed=0)
    slots = np.arange(rows)
    batch = torch.tensor([logits]).repeat(rows, 1)
    pending = sampler.launch(batch, SampleBatch(torch.from_numpy(slots), slots, []))
    return np.bincount(pending.tokens.numpy(), minlength=len(logits)) / rows


def test_min_p_comes_before_top_p_as_in_vllm():
    # p = 0.4, 0.3, 0.2, 0.1. min_p=0.3 drops the 0.1 token (below 0.3 * 0.4); top_p=0.75
    # then reads the kept mass renormalised (0.44, 0.33, 0.22): two tokens reach it. Top-p
    # first (0.4, 0.3, 0.2 reach 0.75) would have kept three.
    logits = np.log([0.4, 0.3, 0.2, 0.1]).tolist()
    freq = _freq(SamplingParams(min_p=0.3, top_p=0.75), logits)
    assert freq[2:].sum() == 0
    np.testing.assert_allclose(freq[:2], [4 / 7, 3 / 7], atol=0.02)


def test_min_p_reads_the_tempered_distribution():
    # At temperature 2 the probabilities are ~ sqrt(0.4, 0.3, 0.2, 0.1): min_p=0.6 keeps
    # 0.2's token (sqrt(0.5) > 0.6) but not 0.1's (0.5 < 0.6).
    logits = np.log([0.4, 0.3, 0.2, 0.1]).tolist()
    freq = _freq(SamplingParams(temperature=2.0, min_p=0.6), logits)
    assert freq[3] == 0 and freq[2] > 0.2
