"""Test data shared by the AdaptiVocab tests (a module of its own: importing ``conftest``
by name picks whichever conftest pytest loaded last)."""

from __future__ import annotations

import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO.parent / "shared" / "assets"
MISTRAL = ASSETS / "tokenizers" / "mistral-7b"
PYDOCS = ASSETS / "corpora" / "python-docs.txt.gz"
SPECIALS = ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>"]


def synthetic_docs(n: int = 1500, seed: int = 0) -> list[str]:
    """A repetitive technical text, so short n-grams recur like in a real domain."""
    rng = random.Random(seed)
    names = [
        "parse_args",
        "KVCache",
        "os.path.join",
        "numpy.ndarray",
        "the scheduler",
        "a request",
        "torch.Tensor",
    ]
    verbs = ["returns", "allocates", "frees", "raises ValueError if", "maps", "accepts"]
    objs = [
        "the page pool",
        "a new slot",
        "the decoded text",
        "an integer",
        "the token budget",
        "None",
    ]
    extras = ["", " See :ref:`caching`.", " (new in 3.12)", " — déjà vu ✓", " 🚀"]
    syllables = ["ka", "lo", "mem", "page", "slot", "tor", "vi", "ex", "ra", "qu", "ne", "ssi"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(150)]
    docs = []
    for _ in range(n):
        lines = [
            f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(objs)} for {rng.choice(words)} "
            f"{rng.choice(words)} in {rng.randint(0, 999)} steps.{rng.choice(extras)}"
            for _ in range(rng.randint(1, 4))
        ]
        if rng.random() < 0.3:
            lines.append("   .. code-block:: python\n\n      x = " + rng.choice(names) + "(1, 2)")
        docs.append("\n".join(lines))
    return docs
