"""Turn logits into next tokens, every row with its own options, vectorised across the batch.

Order of operations: raw log-probabilities (reported as ``logprobs``) -> allowed token ids,
logit bias, min_tokens masking, bad words -> repetition / presence / frequency penalties -> grammar
masks (structured outputs) -> greedy argmax, or temperature, min-p, top-k, top-p and a
draw (vLLM v1's order: min-p reads the whole tempered distribution, top-p the mass min-p
kept). A draw uses the exponential race (argmax of p / E, E ~ Exp(1)),
so a request with a seed draws its noise from its own generator and gets the same tokens
whatever else is in the batch.

On a GPU a plain draw (no seeded row, no top-k, top-p or min-p) runs as two fused kernels
(``race_sample.py``) instead of the PyTorch ops below, which stay the reference.

The options live per KV slot on the device (``SlotOptions``), written once when a
sequence takes a slot; a step gathers its rows' options by slot there. The host only looks
at its copy of the options to skip what no row asks for: no sort unless a row asks for
top-k or top-p, no softmax for an all-greedy batch, no per-row work except for the rare
rows with a seed, penalties, min_tokens, a logit bias, allowed token ids, bad words or
logprobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sarathi.core.scheduler_output import PromptLogprobs, StepResult, TokenLogprobs, TokenMasks
from sarathi.model_executor.kernel_switches import triton_installed
from sarathi.model_executor.layers import race_sample
from sarathi.sampling_params import SamplingParams, bad_word_bans, min_tokens_bans


@dataclass
class SpecialRow:
    """A row with options that need per-row work (a seed, or logits it changes: penalties,
    min_tokens, logit_bias, allowed_token_ids, bad_words)."""

    row: int
    params: SamplingParams
    generator: torch.Generator | None
    # Prompt + generated tokens so far (penalties and multi-token bad words only).
    history: list[int] | None
    prompt_len: int
    ban_eos: bool  # min_tokens not reached yet
    # allowed_token_ids as a tensor of distinct ids, made once per sequence
    # (``allowed_ids``): None when the request does not restrict them.
    allowed: torch.Tensor | None = None


@dataclass
class SampleBatch:
    """The rows a step samples: each row's slot (device and host) and the few rows that
    need per-row work."""

    slots: torch.Tensor  # [S] device
    host_slots: np.ndarray  # [S]
    special: list[SpecialRow]
    masks: TokenMasks | None = None  # grammar masks of the constrained rows


@dataclass
class PendingSample:
    tokens: torch.Tensor  # [rows] chosen ids on the device
    host: torch.Tensor  # their host copy (pinned; valid once ``done`` has passed)
    done: torch.cuda.Event | None
    raw: torch.Tensor | None  # log-probabilities, where any row asked for them
    want: np.ndarray | None  # [S] top-k logprobs asked per row (-1: none), when raw is set


@dataclass
class PendingPromptLogprobs:
    """A step's prompt logprobs, on the device until the step is collected."""

    raw: torch.Tensor  # [R, vocab] log-probabilities of the rows that score prompt tokens
    targets: torch.Tensor  # [R] the prompt token after each row
    top: np.ndarray  # [R] top-k asked per row
    spans: list[tuple[int, int, int]]  # (seq id, first position scored, rows) per chunk

    def finish(self) -> list[PromptLogprobs]:
        entries = _scored(self.raw, self.targets, self.top)
        out = []
        first = 0
        for seq_id, start, rows in self.spans:
            out.append(PromptLogprobs(seq_id, start, entries[first : first + rows]))
            first += rows
        return out


class SlotOptions:
    """Each slot's sampling options on the device, with a host copy to branch on."""

    def __init__(self, max_slots: int, device: torch.device) -> None:
        self.device = device
        self.temperature = np.ones(max_slots, dtype=np.float32)
        self.top_k = np.zeros(max_slots, dtype=np.int64)  # 0: off
        self.top_p = np.ones(max_slots, dtype=np.float32)
        self.min_p = np.zeros(max_slots, dtype=np.float32)
        self.logprobs = np.full(max_slots, -1, dtype=np.int64)  # -1: not asked
        self.special = np.zeros(max_slots, dtype=bool)  # a seed, or logits it changes
        self._dev = torch.zeros(4, max_slots, dtype=torch.float32, device=device)
        self._dirty: list[int] = []

    def set(self, slot: int, p: SamplingParams, seeded: bool) -> None:
        # logits / t overflows float32 for a tiny t (1e-40 is a denormal: every row's
        # argmax would land on the first +inf).
        self.temperature[slot] = 0.0 if p.greedy else p.temperature
        self.top_k[slot] = p.top_k if p.top_k > 0 else 0
        self.top_p[slot] = p.top_p
        self.min_p[slot] = p.min_p
        self.logprobs[slot] = -1 if p.logprobs is None else p.logprobs
        self.special[slot] = seeded or p.shapes_logits
        self._dirty.append(slot)

    def commit(self) -> None:
        """One copy of the slots set since the last commit to the device."""
        if not self._dirty:
            return
        idx = np.asarray(self._dirty, dtype=np.int64)
        self._dirty = []
        rows = np.stack(
            [
                self.temperature[idx],
                self.top_k[idx].astype(np.float32),
                self.top_p[idx],
                self.min_p[idx],
            ]
        )
        values = torch.from_numpy(rows)
        index = torch.from_numpy(idx)
        if self.device.type == "cuda":
            values = values.pin_memory().to(self.device, non_blocking=True)
            index = index.pin_memory().to(self.device, non_blocking=True)
        self._dev[:, index] = values

    @property
    def device_temperature(self) -> torch.Tensor:
        """[slots] each slot's temperature on the device."""
        return self._dev[0]

    def device_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """[4, S]: temperature, top_k, top_p, min_p of the rows' slots."""
        return self._dev[:, slots]


class Sampler:
    def __init__(
        self,
        eos_ids: set[int],
        options: SlotOptions,
        last_token: torch.Tensor,
        seed: int,
        fused: bool = False,
    ) -> None:
        """``last_token``: [slots] device tensor that receives each sampled row's token at
        its slot (the next step reads placeholders' values there). ``fused``: draw plain
        batches with the fused kernel (``race_sample.py``) where it applies."""
        self.eos_ids = sorted(eos_ids)
        self.options = options
        self.last_token = last_token
        self.device = last_token.device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.fused = fused
        self._seeds = np.random.default_rng(seed)  # one noise seed per fused draw

    def warm_up(self, vocab: int, dtype: torch.dtype) -> None:
        """Compile the fused draw's kernels now (for the model's logits and for float32
        ones, which rows that change their logits pass), not in the first sampled step."""
        if self.fused and self.device.type == "cuda" and triton_installed():
            race_sample.warm_up(vocab, [dtype, torch.float32], self.device)

    def launch(self, logits: torch.Tensor, batch: SampleBatch) -> PendingSample:
        """Queue the sampling work; the chosen ids start their copy to the host. ``logits``
        may be in the model's dtype: an argmax and the fused draw read it as it is,
        everything else in float32."""
        opts = self.options
        hs = batch.host_slots
        want = opts.logprobs[hs]
        any_logprobs = bool((want >= 0).any())
        raw = torch.log_softmax(logits.float(), dim=-1) if any_logprobs else None
        if batch.special:
            logits = self._special_rows(logits.float(), batch.special)
        if batch.masks is not None:
            logits = apply_token_masks(logits, batch.masks)
        temps = opts.temperature[hs]
        if not (temps > 0).any():
            tokens = logits.argmax(dim=-1)
            self.last_token.index_copy_(0, batch.slots, tokens)
        elif self.fused and self._plain(batch) and race_sample.fits(logits):
            seed = int(self._seeds.integers(2**31))
            tokens = race_sample.race_sample(
                logits, opts.device_temperature, batch.slots, self.last_token, seed
            )
        else:
            tokens = self._draw(logits.float(), batch, temps)
            self.last_token.index_copy_(0, batch.slots, tokens)
        host, done = tokens, None
        if tokens.is_cuda:
            host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            host.copy_(tokens, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        return PendingSample(tokens, host, done, raw, want if any_logprobs else None)

    def finish(self, pending: PendingSample) -> StepResult:
        """Wait for the ids (the step's one device-to-host copy) and build the result."""
        if pending.done is not None:
            pending.done.synchronize()
        token_list = pending.host.tolist()
        if pending.raw is None or pending.want is None:
            return StepResult(token_list)
        return StepResult(token_list, _logprobs(pending.raw, pending.tokens, pending.want))

    def _plain(self, batch: SampleBatch) -> bool:
        """No row draws from its own generator or truncates its distribution."""
        opts, hs = self.options, batch.host_slots
        return not (
            any(r.generator is not None for r in batch.special)
            or (opts.top_k[hs] > 0).any()
            or (opts.top_p[hs] < 1).any()
            or (opts.min_p[hs] > 0).any()
        )

    # -- steps -----------------------------------------------------------------------------
    def _special_rows(self, logits: torch.Tensor, rows: list[SpecialRow]) -> torch.Tensor:
        """allowed_token_ids, logit_bias, min_tokens masking, bad words and penalties, row by
        row (rare rows only)."""
        logits = logits.clone()
        vocab = logits.shape[-1]
        for r in rows:
            p, row = r.params, logits[r.row]
            if p.allowed_token_ids is not None:
                distinct = r.allowed
                if distinct is None:
                    distinct = allowed_ids(p.allowed_token_ids)
                keep = _from_host(distinct[distinct < vocab], row.device)
                allowed = row[keep]
                row.fill_(float("-inf"))
                row[keep] = allowed
            if p.logit_bias:
                ids = [t for t in p.logit_bias if t < vocab]
                row[_to_device(ids, torch.long, row.device)] += _to_device(
                    [float(p.logit_bias[t]) for t in ids], row.dtype, row.device
                )
            if r.ban_eos:
                banned = min_tokens_bans(p, self.eos_ids)
                if banned:
                    row[_to_device(banned, torch.long, row.device)] = float("-inf")
            if p.bad_words_token_ids:
                banned = [
                    t
                    for t in bad_word_bans(p.bad_words_token_ids, r.history, r.prompt_len)
                    if t < vocab
                ]
                if banned:
                    row[_to_device(banned, torch.long, row.device)] = float("-inf")
            if r.history is None:
                continue
            if p.repetition_penalty != 1:
                seen = _to_device(sorted(set(r.history)), torch.long, row.device)
                seen = seen[seen < vocab]
                vals = row[seen]
                row[seen] = torch.where(
                    vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty
                )
            if p.presence_penalty or p.frequency_penalty:
                out = _to_device(r.history[r.prompt_len :], torch.long, row.device)
                out = out[out < vocab]
                counts = torch.bincount(out, minlength=vocab).to(row.dtype)
                row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(
                    row.dtype
                )
        return logits

    def _draw(self, logits: torch.Tensor, batch: SampleBatch, temps: np.ndarray) -> torch.Tensor:
        opts, hs = self.options, batch.host_slots
        t, top_k, top_p, min_p = opts.device_rows(batch.slots)
        greedy = (t == 0) if bool((temps == 0).any()) else None
        if greedy is not None:
            t = torch.where(greedy, torch.ones_like(t), t)
        scaled = logits / t.unsqueeze(1)
        noise = torch.empty_like(scaled)
        noise.exponential_(generator=self.generator)
        for r in batch.special:
            if r.generator is not None and not r.params.greedy:
                noise[r.row].exponential_(generator=r.generator)
        # vLLM v1's order: temperature, then min-p (on the whole tempered distribution),
        # then top-k and top-p over what min-p kept (top-p's mass is that of the kept
        # tokens, renormalised).
        if (opts.min_p[hs] > 0).any():
            probs = torch.softmax(scaled, dim=-1)
            keep = probs >= min_p.unsqueeze(1) * probs.max(dim=-1, keepdim=True).values
            scaled = scaled.masked_fill(~keep, float("-inf"))
        if (opts.top_k[hs] > 0).any() or (opts.top_p[hs] < 1).any():
            scaled = _top_k_top_p(scaled, top_k, top_p)
        # The race without a softmax: argmax of p / E is argmax of logits / T - log E,
        # since p is exp(logits / T) over a per-row constant (a dropped token's -inf
        # stays -inf).
        sampled = (scaled - noise.log_()).argmax(dim=-1)
        if greedy is not None:
            sampled = torch.where(greedy, logits.argmax(dim=-1), sampled)
        return sampled


def _logprobs(
    raw: torch.Tensor, tokens: torch.Tensor, want: np.ndarray
) -> list[TokenLogprobs | None]:
    """Logprobs of the sampled rows; None for the rows that did not ask (``want`` < 0)."""
    scored = _scored(raw, tokens, np.maximum(want, 0))
    return [None if n < 0 else lp for lp, n in zip(scored, want.tolist(), strict=True)]


def _scored(raw: torch.Tensor, tokens: torch.Tensor, top: np.ndarray) -> list[TokenLogprobs]:
    """Each row's token's log-probability and rank (1 = most likely), and the row's
    ``top[i]`` most likely tokens."""
    chosen = raw.gather(1, tokens.unsqueeze(1)).squeeze(1)
    ranks = (raw > chosen.unsqueeze(1)).sum(dim=-1) + 1
    k = int(top.max(initial=0))
    top_vals: list[list[float]] = []
    top_ids: list[list[int]] = []
    if k > 0:
        vals, ids = raw.topk(k, dim=-1)
        top_vals, top_ids = vals.tolist(), ids.tolist()
    chosen_l, ranks_l = chosen.tolist(), ranks.tolist()
    return [
        TokenLogprobs(
            chosen_l[i], ranks_l[i], [(top_ids[i][j], top_vals[i][j], j + 1) for j in range(n)]
        )
        for i, n in enumerate(top.tolist())
    ]


def apply_token_masks(logits: torch.Tensor, masks: TokenMasks) -> torch.Tensor:
    """Set the logits of the tokens a row's grammar forbids to -inf (in place)."""
    dev = logits.device
    rows = _from_host(torch.from_numpy(masks.rows), dev)
    bits = _from_host(torch.from_numpy(masks.bits), dev)
    shifts = torch.arange(32, dtype=torch.int32, device=dev)
    allowed = ((bits.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)
    vocab = logits.shape[-1]
    if allowed.shape[1] >= vocab:
        allowed = allowed[:, :vocab]
    else:  # the model's padded rows past the tokenizer's vocabulary: never allowed
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]), value=False)
    picked = logits.index_select(0, rows).masked_fill_(~allowed, float("-inf"))
    return logits.index_copy_(0, rows, picked)


def _from_host(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def allowed_ids(token_ids: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The distinct ids of ``allowed_token_ids``, on the host. Made once per sequence, not
    per step: a list may hold a million ids (repeats included), and walking it in Python at
    every step held the engine thread for seconds, stalling every other request."""
    return torch.unique(torch.tensor(token_ids, dtype=torch.long))


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Per-row values on the device. Through pinned memory and non-blocking: a plain copy
    from pageable memory waits for everything queued on the stream, which would stall the
    host on the step still running on the GPU."""
    return _from_host(torch.tensor(values, dtype=dtype), device)


def _top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """top_k: [S] float (0: off), top_p: [S] float (1: off)."""
    vocab = logits.shape[-1]
    ks = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab)).long().clamp(1, vocab)
    # Stable: tied logits keep token order, so where top-p cuts among them does not depend on
    # the batch (an unstable sort orders ties by the kernel and the tensor's shape).
    sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
    # vLLM's top-k is a threshold on the k-th largest logit: every token tied with it stays
    # (ties are frequent with bf16 logits), so the cut never picks among equals.
    drop = sorted_logits < sorted_logits.gather(1, (ks - 1).unsqueeze(1))
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    # Keep the smallest set of most likely tokens whose mass reaches top_p (vLLM's rule):
    # drop a token once the mass from it to the tail is at most 1 - top_p, i.e. the tokens
    # before it already hold top_p. (``mass before > top_p`` keeps one token too many when
    # the mass before it is exactly top_p: uniform logits with top_p=0.5 would draw from 3
    # of 4 tokens, not 2.) The tail sum, not 1 - cumsum: cumsum rounds to 1 before the tail, so
    # top_p=1 would drop tiny-probability tokens.
    tail = probs.flip(-1).cumsum(dim=-1).flip(-1)
    drop |= tail <= 1 - top_p.unsqueeze(1)
    drop[:, 0] = False  # always keep the most likely token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)
