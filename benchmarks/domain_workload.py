"""The text workload of ``domain_serving.py``: requests cut from held-out domain text.

A corpus is split into interleaved training and held-out blocks; each request is a prompt
cut from held-out text plus the reference continuation that follows it, both ending between
words, sized in base-tokenizer tokens. Under each tokenizer a request becomes that
tokenizer's prompt ids and the continuation's token count in context.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from serve import RequestSpec


class BenchmarkError(RuntimeError):
    """A setup problem that stops the whole benchmark (bad input, failed build)."""


@dataclass
class TextRequest:
    prompt: str
    continuation: str

    @property
    def continuation_bytes(self) -> int:
        return len(self.continuation.encode("utf-8"))


@dataclass
class TokenizedWorkload:
    """The text workload under one tokenizer."""

    tokenizer: str  # "base" or "patch"
    specs: list[RequestSpec]

    @property
    def prompt_tokens(self) -> list[int]:
        return [len(s.prompt_ids) for s in self.specs]

    @property
    def output_tokens(self) -> list[int]:
        return [s.output_len for s in self.specs]


def split_corpus(text: str, heldout_fraction: float, block_chars: int) -> tuple[str, list[str]]:
    """Cut the text into blocks of about ``block_chars`` at blank lines; every k-th block
    (k = 1 / heldout_fraction) is held out, the rest is training text. Interleaved blocks keep
    the held-out text spread over the whole corpus (its end may be one topic) while every
    held-out span is contiguous text the vocabulary builder never saw."""
    blocks, start = [], 0
    while start < len(text):
        cut = text.find("\n\n", start + block_chars)
        end = len(text) if cut < 0 else cut + 2
        blocks.append(text[start:end])
        start = end
    period = max(2, round(1 / heldout_fraction))
    held = [b for i, b in enumerate(blocks) if i % period == period // 2]
    train = "".join(b for i, b in enumerate(blocks) if i % period != period // 2)
    if not held or not train:
        raise BenchmarkError(
            f"the corpus ({len(text)} characters) is too small to split into "
            f"blocks of {block_chars}; lower --heldout-block-chars"
        )
    return train, held


def _snap_to_space(text: str, i: int) -> int:
    """The last whitespace position at or before ``i`` (0 if none): cuts fall between words."""
    i = min(i, len(text) - 1)
    while i > 0 and not text[i].isspace():
        i -= 1
    return i


def cut_requests(
    blocks: list[str],
    base_tokenizer: Any,
    n: int,
    prompt_tokens: int,
    output_tokens: int,
    seed: int,
) -> list[TextRequest]:
    """``n`` (prompt, continuation) pairs of about ``prompt_tokens`` / ``output_tokens`` base
    tokens, cut at whitespace, at start points spread evenly over the held-out text."""
    want = prompt_tokens + output_tokens
    sample = max(blocks, key=len)[:20000]
    # verbose=False: the sample may exceed the tokenizer's model_max_length, which is fine here.
    sample_ids = base_tokenizer(sample, add_special_tokens=False, verbose=False)["input_ids"]
    cpt = len(sample) / max(1, len(sample_ids))
    need = int(want * cpt * 1.5) + 64
    sizes = [len(b) for b in blocks]
    total = sum(sizes)
    rng = random.Random(seed)
    out: list[TextRequest] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise BenchmarkError(
                f"could only cut {len(out)} of {n} requests of {want} tokens "
                "from the held-out text; use a larger corpus or fewer tokens"
            )
        # Stratified start points; retries (a block too short) fall back to uniform ones.
        frac = (len(out) + rng.random()) / n if attempts <= n else rng.random()
        pos = int(frac * total)
        b = 0
        while b < len(blocks) - 1 and pos >= sizes[b]:
            pos -= sizes[b]
            b += 1
        block = blocks[b]
        s = pos
        while s < len(block) and not block[s].isspace():  # start at a word
            s += 1
        while s < len(block) and block[s].isspace():
            s += 1
        window = block[s : s + need]
        enc = base_tokenizer(
            window, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = enc["offset_mapping"]
        if len(offsets) <= want:
            continue
        p_end = _snap_to_space(window, offsets[prompt_tokens - 1][1])
        # The continuation counts its tokens from the prompt's end (the snap back may have
        # moved that end over a long word, e.g. a URL).
        first = bisect.bisect_left([o[0] for o in offsets], p_end)
        if p_end == 0 or first + output_tokens > len(offsets):
            continue
        c_end = _snap_to_space(window, offsets[first + output_tokens - 1][1])
        if c_end <= p_end:
            continue
        out.append(TextRequest(window[:p_end], window[p_end:c_end]))
    return out


def tokenize_workload(name: str, tokenizer: Any, requests: list[TextRequest]) -> TokenizedWorkload:
    """Prompt ids and the continuation's token count *in context* (tokens of prompt +
    continuation minus tokens of the prompt), so a merge across the cut is counted once."""
    specs = []
    for r in requests:
        ids = list(tokenizer.encode(r.prompt))
        full = len(tokenizer.encode(r.prompt + r.continuation))
        specs.append(RequestSpec(ids, max(1, full - len(ids))))
    return TokenizedWorkload(name, specs)


def workload_stats(
    texts: list[TextRequest], workloads: dict[str, TokenizedWorkload], expected: int
) -> dict[str, Any]:
    n = len(texts)
    digest = hashlib.sha256(
        "\x00".join(t.prompt + "\x01" + t.continuation for t in texts).encode()
    ).hexdigest()[:16]
    out: dict[str, Any] = {
        "requests": n,
        "texts_sha256": digest,
        "expected_request_tokens": expected,
        "mean_prompt_bytes": sum(len(t.prompt.encode()) for t in texts) / n,
        "mean_continuation_bytes": sum(t.continuation_bytes for t in texts) / n,
    }
    for name, wl in workloads.items():
        out[f"{name}_mean_prompt_tokens"] = sum(wl.prompt_tokens) / n
        out[f"{name}_mean_output_tokens"] = sum(wl.output_tokens) / n
    return out
