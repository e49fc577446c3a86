"""Turn logits into next tokens, row by row options, vectorised across the batch.

Order of operations: raw log-probabilities (reported as ``logprobs``) -> min_tokens masking
-> repetition / presence / frequency penalties -> greedy argmax, or temperature, top-k,
top-p, min-p and a draw. A draw uses the exponential race (argmax of p / E, E ~ Exp(1)),
so a request with a seed draws its noise from its own generator and gets the same tokens
whatever else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sarathi.sampling_params import SamplingParams


@dataclass
class SamplingRow:
    params: SamplingParams
    history: list[int]  # prompt + generated tokens so far
    prompt_len: int
    generator: torch.Generator | None


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[float] | None  # the chosen tokens' raw logprobs, where asked
    ranks: list[int] | None
    top: list[list[tuple[int, float, int]]] | None


@dataclass
class PendingSample:
    tokens: torch.Tensor  # [rows] chosen ids on the device
    host: torch.Tensor  # their host copy (pinned; valid once ``done`` has passed)
    done: "torch.cuda.Event | None"
    raw: torch.Tensor | None  # log-probabilities, where any row asked for them
    rows: list[SamplingRow]
    want_logprobs: list[bool]


class Sampler:
    def __init__(self, eos_ids: set[int], device: torch.device, seed: int) -> None:
        self.eos_ids = sorted(eos_ids)
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        return self.finish(self.launch(logits, rows))

    def launch(self, logits: torch.Tensor, rows: list[SamplingRow]) -> "PendingSample":
        """Queue the sampling work; the chosen ids start their copy to the host."""
        want_logprobs = [r.params.logprobs is not None for r in rows]
        raw = torch.log_softmax(logits, dim=-1) if any(want_logprobs) else None
        logits = self._mask_min_tokens(logits, rows)
        logits = self._apply_penalties(logits, rows)
        tokens = self._choose(logits, rows)
        host, done = tokens, None
        if tokens.is_cuda:
            host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            host.copy_(tokens, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        return PendingSample(tokens, host, done, raw, rows, want_logprobs)

    def finish(self, pending: "PendingSample") -> SamplerOutput:
        """Wait for the ids (the step's one device-to-host copy) and build the output."""
        if pending.done is not None:
            pending.done.synchronize()
        token_list = pending.host.tolist()
        if pending.raw is None:
            return SamplerOutput(token_list, None, None, None)
        return self._logprobs(pending.raw, pending.tokens, token_list, pending.rows,
                              pending.want_logprobs)

    # -- steps -----------------------------------------------------------------------------
    def _mask_min_tokens(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        masked = None
        for i, r in enumerate(rows):
            p = r.params
            if p.min_tokens and len(r.history) - r.prompt_len < p.min_tokens:
                banned = list(p.stop_token_ids) + ([] if p.ignore_eos else self.eos_ids)
                if banned:
                    if masked is None:
                        masked = logits.clone()
                    masked[i, _to_device(banned, torch.long, logits.device)] = float("-inf")
        return logits if masked is None else masked

    def _apply_penalties(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        idx = [i for i, r in enumerate(rows) if r.params.has_penalties]
        if not idx:
            return logits
        logits = logits.clone()
        vocab = logits.shape[-1]
        for i in idx:
            r, p = rows[i], rows[i].params
            row = logits[i]
            if p.repetition_penalty != 1:
                seen = _to_device(sorted(set(r.history)), torch.long, row.device)
                seen = seen[seen < vocab]
                vals = row[seen]
                row[seen] = torch.where(vals > 0, vals / p.repetition_penalty,
                                        vals * p.repetition_penalty)
            if p.presence_penalty or p.frequency_penalty:
                out = _to_device(r.history[r.prompt_len:], torch.long, row.device)
                out = out[out < vocab]
                counts = torch.bincount(out, minlength=vocab).to(row.dtype)
                row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
        return logits

    def _choose(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        greedy = [r.params.greedy for r in rows]
        if all(greedy):
            return logits.argmax(dim=-1)
        temps = _to_device([r.params.temperature if not g else 1.0 for r, g in zip(rows, greedy)],
                           logits.dtype, logits.device)
        scaled = logits / temps.unsqueeze(1)
        if any(r.params.top_k > 0 or r.params.top_p < 1 for r in rows):
            scaled = _top_k_top_p(scaled, rows)
        probs = torch.softmax(scaled, dim=-1)
        if any(r.params.min_p > 0 for r in rows):
            min_p = _to_device([r.params.min_p for r in rows], probs.dtype, probs.device)
            keep = probs >= min_p.unsqueeze(1) * probs.max(dim=-1, keepdim=True).values
            probs = probs * keep
        noise = torch.empty_like(probs)
        noise.exponential_(generator=self.generator)
        for i, r in enumerate(rows):
            if r.generator is not None and not greedy[i]:
                noise[i].exponential_(generator=r.generator)
        sampled = (probs / noise).argmax(dim=-1)
        if any(greedy):
            g = _to_device(greedy, torch.bool, logits.device)
            sampled = torch.where(g, logits.argmax(dim=-1), sampled)
        return sampled

    def _logprobs(self, raw: torch.Tensor, tokens: torch.Tensor, token_list: list[int],
                  rows: list[SamplingRow], want: list[bool]) -> SamplerOutput:
        chosen = raw.gather(1, tokens.unsqueeze(1)).squeeze(1)
        ranks = (raw > chosen.unsqueeze(1)).sum(dim=-1) + 1
        k = max((r.params.logprobs or 0) for r in rows)
        top_vals = top_ids = None
        if k:
            top_vals, top_ids = raw.topk(k, dim=-1)
            top_vals, top_ids = top_vals.tolist(), top_ids.tolist()
        chosen_l, ranks_l = chosen.tolist(), ranks.tolist()
        tops: list[list[tuple[int, float, int]]] = []
        for i, r in enumerate(rows):
            n = r.params.logprobs or 0
            tops.append([(top_ids[i][j], top_vals[i][j], j + 1) for j in range(n)] if n else [])
        return SamplerOutput(token_list, [c if w else None for c, w in zip(chosen_l, want)],
                             ranks_l, tops)


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One step's per-row options on the device. Through pinned memory and non-blocking:
    a plain copy from pageable memory waits for everything queued on the stream, which
    would stall the host on the step still running on the GPU."""
    t = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _top_k_top_p(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    vocab = logits.shape[-1]
    ks = _to_device([r.params.top_k if r.params.top_k > 0 else vocab for r in rows], torch.long,
                    logits.device)
    ps = _to_device([r.params.top_p for r in rows], logits.dtype, logits.device)
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    positions = torch.arange(vocab, device=logits.device).unsqueeze(0)
    drop = positions >= ks.unsqueeze(1)
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
    drop |= before > ps.unsqueeze(1)
    drop[:, 0] = False  # always keep the most likely token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)
