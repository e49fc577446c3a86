"""Training data: documents tokenized, concatenated and cut into fixed-length sequences.

Each document starts with the tokenizer's BOS (when it has one), so the model
learns document starts the way ``bits_per_byte`` scores them. No EOS is added:
the corpora here are paragraphs of longer files, not whole documents.
The order of sequences is a seeded permutation per epoch, so the data position
of a run is one integer (sequences consumed) and a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from adaptivocab.errors import AdaptiVocabError


def encode_documents(
    tokenizer: Any, docs: Sequence[str], progress: bool = True, chunk: int = 2048
) -> list[list[int]]:
    """Ids of every document with special tokens (BOS), for a PatchTokenizer or an HF tokenizer."""
    out: list[list[int]] = []
    bar = tqdm(total=len(docs), desc="tokenizing", unit="doc", disable=not progress, leave=False)
    for start in range(0, len(docs), chunk):
        part = list(docs[start : start + chunk])
        if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "ngram_pieces"):
            out.extend(tokenizer.encode_batch(part, add_special_tokens=True))
        else:
            out.extend(tokenizer(part, add_special_tokens=True)["input_ids"])
        bar.update(len(part))
    bar.close()
    return out


@dataclass(frozen=True)
class PackedData:
    """``sequences[i]`` is one training example of ``seq_len`` ids.

    The tail that does not fill a whole sequence is dropped.
    """

    sequences: torch.Tensor  # [num_sequences, seq_len], int64
    tokens_dropped: int

    @property
    def num_sequences(self) -> int:
        return int(self.sequences.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.sequences.shape[1])

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(self.num_sequences, generator=gen)

    def batch(self, seed: int, position: int, batch_size: int) -> torch.Tensor:
        """The ``batch_size`` sequences starting at global ``position``.

        A batch crosses epochs as needed.
        """
        rows: list[torch.Tensor] = []
        n = self.num_sequences
        while len(rows) < batch_size:
            epoch, offset = divmod(position, n)
            take = min(batch_size - len(rows), n - offset)
            idx = self.order(seed, epoch)[offset : offset + take]
            rows.extend(self.sequences[idx].unbind(0))
            position += take
        return torch.stack(rows)


def pack_documents(
    tokenizer: Any, docs: Sequence[str], seq_len: int, progress: bool = True
) -> PackedData:
    """Tokenize ``docs`` and cut the concatenation into sequences of ``seq_len`` ids."""
    if seq_len < 2:
        raise AdaptiVocabError(f"--seq-len must be at least 2, got {seq_len}")
    if not docs:
        raise AdaptiVocabError("no training documents; pass a non-empty --corpus")
    ids = encode_documents(tokenizer, docs, progress)
    total = sum(len(x) for x in ids)
    flat = (
        torch.tensor([t for x in ids for t in x], dtype=torch.long)
        if total
        else torch.zeros(0, dtype=torch.long)
    )
    n = total // seq_len
    if n == 0:
        raise AdaptiVocabError(
            f"the corpus has {total} tokens, fewer than one sequence of {seq_len}; pass more text "
            "or a smaller --seq-len"
        )
    return PackedData(
        sequences=flat[: n * seq_len].view(n, seq_len).clone(), tokens_dropped=total - n * seq_len
    )
