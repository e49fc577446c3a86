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
