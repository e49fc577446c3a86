"""The server and the offline API give the same request the same answer: random greedy and
seeded requests sent to /v1/completions and /v1/chat/completions, and the same parameters
passed to ``LLM.generate`` and ``LLM.chat`` as ``SamplingParams``, on the demo model. What
the server translates (stop strings and tokens, logit_bias keyed by strings, penalties,
min_tokens, ignore_eos, n, seed, logprobs) must reach the engine unchanged.
SERVER_OFFLINE_SEEDS=N runs N seeds of each (3)."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from live_server import MAX_MODEL_LEN
from random_requests import PROMPTS, sampling_body
from sarathi import LLM, SamplingParams

SEEDS = int(os.environ.get("SERVER_OFFLINE_SEEDS", "3"))


@pytest.fixture(scope="module")
def offline() -> LLM:
    return LLM("demo", max_model_len=MAX_MODEL_LEN)


def _sampling(body: dict[str, Any]) -> SamplingParams:
    """What the body asks for, as offline callers write it (completions' logprobs: a count)."""
    kw = dict(body)
    if "logit_bias" in kw:
        kw["logit_bias"] = {int(t): b for t, b in kw["logit_bias"].items()}
    return SamplingParams(**kw)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_completions_match_generate(http, offline, seed):
    rng = random.Random(seed)
    for _ in range(8):
        prompt, body = rng.choice(PROMPTS), sampling_body(rng)
        if rng.random() < 0.3:
            body["logprobs"] = 2
        served = http.post("/v1/completions", json={"prompt": prompt, **body}).json()
        local = offline.generate(prompt, _sampling(body), use_tqdm=False)[0]
        for choice, out in zip(served["choices"], local.outputs, strict=True):
            assert choice["text"] == out.text, (prompt, body)
            assert choice["finish_reason"] == out.finish_reason, (prompt, body)
            if "logprobs" in body:
                want = [lp[t].logprob for lp, t in zip(out.logprobs, out.token_ids)]
                assert choice["logprobs"]["token_logprobs"] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_chat_matches_llm_chat(http, offline, seed):
    rng = random.Random(50 + seed)
    for _ in range(8):
        messages = [{"role": "user", "content": rng.choice(PROMPTS)}]
        body = sampling_body(rng)
        served = http.post("/v1/chat/completions", json={"messages": messages, **body}).json()
        local = offline.chat(messages, _sampling(body), use_tqdm=False)[0]
        for choice, out in zip(served["choices"], local.outputs, strict=True):
            assert (choice["message"]["content"] or "") == out.text, (messages, body)
            assert choice["finish_reason"] == out.finish_reason, (messages, body)
