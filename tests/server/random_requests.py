"""Random request bodies for the server's property tests: the sampling parameters a vLLM
client sends, greedy or seeded (so two runs of one body draw the same tokens). A module of
its own, as live_server.py: importing ``conftest`` by name picks whichever pytest loaded."""

from __future__ import annotations

import random
from typing import Any

PROMPTS = ["The cache", "Once upon a time", "def main():", "Attention is", "x", "a b c d"]
STOPS = ["e", "th", "\n", " the", ".", "ing"]


def sampling_body(rng: random.Random) -> dict[str, Any]:
    """n, stop strings and tokens, ignore_eos, min_tokens, penalties and logit_bias (keyed by
    strings, as JSON has it) over greedy or seeded sampling; no prompt or messages."""
    body: dict[str, Any] = {"max_tokens": rng.choice([1, 2, rng.randint(3, 24)])}
    if rng.random() < 0.5:
        body["temperature"] = 0.0
        body["n"] = rng.choice([1, 1, 2])
    else:
        body["temperature"] = rng.choice([0.7, 1.0, 1.3])
        body["top_p"] = rng.choice([1.0, 0.9])
        body["seed"] = rng.randrange(10_000)
        body["n"] = rng.choice([1, 2, 3])
    if rng.random() < 0.4:
        body["stop"] = rng.sample(STOPS, rng.randint(1, 2))
        body["include_stop_str_in_output"] = rng.random() < 0.3
    if rng.random() < 0.15:
        body["stop_token_ids"] = [rng.randrange(3, 256)]
    if rng.random() < 0.3:
        body["ignore_eos"] = True
    if rng.random() < 0.2:
        body["min_tokens"] = rng.randint(0, body["max_tokens"])
    if rng.random() < 0.2:
        body["presence_penalty"] = 0.5
        body["frequency_penalty"] = 0.3
    if rng.random() < 0.15:
        body["repetition_penalty"] = 1.3
    if rng.random() < 0.2:
        body["logit_bias"] = {str(rng.randrange(3, 256)): rng.choice([-100, 5])}
    return body
