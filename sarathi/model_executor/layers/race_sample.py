"""The sampler's plain draw in two kernel launches: temperature, noise and argmax fused.

A draw is the exponential race (``sampler.py``): the argmax of ``logits / T - log E`` with
E ~ Exp(1), which is the argmax of ``logits / T + G`` with G = -log(-log U) Gumbel noise.
In PyTorch that is an upcast and five passes over a [rows, vocab] float32 tensor (scale,
noise, log, add, argmax) and as many launches; here one kernel reads each logit once in
the model's dtype, draws its noise from Philox counters (``tl.rand4x``, four numbers per
counter) and keeps each lane's best score over its share of the vocabulary, reduced across
lanes once at the end; a second picks each row's winner and writes it where the next step
reads it.

The kernel is bound by arithmetic, not by reading the logits, so the noise is scored in
base 2: ``log2(e) * (logits / T + G) = logits * log2(e) / T - log2(-log2 U) + const`` has
the same argmax, and each base-2 logarithm is one approximate hardware instruction
(``lg2.approx``, relative error ~2**-22), where ``tl.log`` is libdevice's exact ``logf``,
a dozen fused multiply-adds.

Rows with temperature 0 take their plain argmax in the same launch. What needs per-row
work (a seed, top-k, top-p, min-p, logprobs of penalised rows) stays on the PyTorch path,
which is also the reference the tests compare this one with: same distribution, greedy
rows identical.
"""

from __future__ import annotations

import os

import torch

from sarathi.model_executor.kernel_switches import num_sms, triton_installed

BLOCK = 2048


if triton_installed():
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import libdevice

    # Triton's interpreter (the CPU checks of these kernels) has no libdevice: there the
    # noise takes tl.log2, which on a GPU compiles to libdevice's exact log2f.
    _FAST_LOG2: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")

    @triton.jit
    def _log2(x):
        if _FAST_LOG2:
            return libdevice.fast_log2f(x)
        return tl.log2(x)

    @triton.jit
    def _race_quarter(base, first, q, end, u, greedy, inv_t, best, best_col):
        """Columns [first, first + len(q)) scored and folded into each lane's running best
        (no reduction across lanes here: that happens once, at the end of the scan).
        ``inv_t``: log2(e) / T, scores in base 2 (module docstring)."""
        cols = first + q
        mask = cols < end
        x = tl.load(base + cols, mask=mask, other=float("-inf")).to(tl.float32)
        # u = 0 gives -inf noise: that token loses, as it should with probability 0.
        noise = -_log2(-_log2(u))
        s = tl.where(greedy, x, x * inv_t + noise)
        s = tl.where(mask, s, float("-inf"))
        # Strictly: a lane sees its columns in increasing order, so it keeps the lowest of
        # equal scores, as torch.argmax does.
        take = s > best
        return tl.where(take, s, best), tl.where(take, cols, best_col)

    # The split count changes with the batch size: a runtime argument, never specialised
    # on, so that one compilation serves every batch (compiled at start-up: ``warm_up``).
    @triton.jit(do_not_specialize=["seed", "splits"])
    def _race_partial_kernel(
        Logits,
        stride,
        Temps,
        Slots,
        BestScore,
        BestIdx,
        vocab,
        per_split,
        seed,
        splits,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0)
        split = tl.program_id(1)
        t = tl.load(Temps + tl.load(Slots + row))
        greedy = t == 0
        inv_t = 1.4426950408889634 / tl.where(greedy, 1.0, t)  # log2(e) / T
        start = split * per_split
        end = tl.minimum(start + per_split, vocab)
        base = Logits + row.to(tl.int64) * stride
        QUARTER: tl.constexpr = BLOCK // 4
        q = tl.arange(0, QUARTER)
        # Philox yields four numbers per counter: counter c serves columns off + k * QUARTER
        # + (c - off / 4), k = 0..3. Counters are unique per row: [0, vocab / 4 + QUARTER).
        counters = row * (vocab // 4 + QUARTER) + q
        best = tl.full([QUARTER], float("-inf"), tl.float32)
        col = tl.full([QUARTER], 0, tl.int32) + start
        for off in range(start, end, BLOCK):
            u0, u1, u2, u3 = tl.rand4x(seed, counters + off // 4)
            first = off
            best, col = _race_quarter(base, first, q, end, u0, greedy, inv_t, best, col)
            first += QUARTER
            best, col = _race_quarter(base, first, q, end, u1, greedy, inv_t, best, col)
            first += QUARTER
            best, col = _race_quarter(base, first, q, end, u2, greedy, inv_t, best, col)
            first += QUARTER
            best, col = _race_quarter(base, first, q, end, u3, greedy, inv_t, best, col)
        top = tl.max(best, 0)
        # The lowest column among the lanes at the top score: torch.argmax's tie rule.
        tl.store(BestScore + row * splits + split, top)
        tl.store(BestIdx + row * splits + split, tl.min(tl.where(best == top, col, end), 0))

    @triton.jit(do_not_specialize=["splits"])
    def _race_final_kernel(
        BestScore, BestIdx, Slots, Tokens, LastToken, splits, WIDTH: tl.constexpr
    ):
        row = tl.program_id(0)
        k = tl.arange(0, WIDTH)
        s = tl.load(BestScore + row * splits + k, mask=k < splits, other=float("-inf"))
        winner = tl.load(BestIdx + row * splits + tl.argmax(s, 0)).to(tl.int64)
        tl.store(Tokens + row, winner)
        tl.store(LastToken + tl.load(Slots + row), winner)


def _most_splits(vocab: int) -> int:
    return max(1, -(-vocab // (2 * BLOCK)))


def warm_up(vocab: int, dtypes: list[torch.dtype], device: torch.device) -> None:
    """Compile the kernels for logits of these dtypes now, not in the first sampled step."""
    temperature = torch.ones(1, device=device)
    slots = torch.zeros(1, dtype=torch.long, device=device)
    last = torch.zeros(1, dtype=torch.long, device=device)
    for dtype in dtypes:
        race_sample(torch.zeros(1, vocab, dtype=dtype, device=device), temperature, slots, last, 0)


def fits(logits: torch.Tensor) -> bool:
    """Whether ``race_sample`` takes these logits (CUDA floating rows, contiguous; Philox
    counters are 32-bit)."""
    rows, vocab = logits.shape
    return (
        triton_installed()
        and logits.is_cuda
        and logits.is_floating_point()
        and logits.stride(1) == 1
        and rows * (vocab // 4 + BLOCK) < 2**31
    )


def race_sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    slots: torch.Tensor,
    last_token: torch.Tensor,
    seed: int,
) -> torch.Tensor:
    """One token per row of ``logits`` [rows, vocab]: a draw at the row's slot's
    temperature (``temperature`` [slots] on the device; 0 = greedy); also written to
    ``last_token[slots[row]]``. ``seed`` in [0, 2**31) picks the noise: a step passes a new
    one."""
    rows, vocab = logits.shape
    if rows == 0:
        return torch.empty(0, dtype=torch.long, device=logits.device)
    # Enough programs to fill the card twice over, each scanning at least two blocks.
    splits = max(1, min(_most_splits(vocab), triton.cdiv(2 * num_sms(logits.device), rows)))
    per_split = triton.cdiv(triton.cdiv(vocab, splits), BLOCK) * BLOCK
    splits = triton.cdiv(vocab, per_split)
    best = torch.empty(rows, splits, dtype=torch.float32, device=logits.device)
    best_idx = torch.empty(rows, splits, dtype=torch.int32, device=logits.device)
    tokens = torch.empty(rows, dtype=torch.long, device=logits.device)
    _race_partial_kernel[(rows, splits)](
        logits,
        logits.stride(0),
        temperature,
        slots,
        best,
        best_idx,
        vocab,
        per_split,
        seed,
        splits,
        BLOCK=BLOCK,
    )
    _race_final_kernel[(rows,)](
        best,
        best_idx,
        slots,
        tokens,
        last_token,
        splits,
        WIDTH=triton.next_power_of_2(_most_splits(vocab)),
    )
    return tokens
