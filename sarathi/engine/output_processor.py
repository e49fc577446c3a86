"""From sampled tokens to what the caller sees: stop checks, text, logprobs, outputs.

The engine loop hands each step's sampled tokens here. Per token: it takes the sequence's
placeholder (or appends), records logprobs, extends the text where text is needed, and
checks the stops (EOS, stop token ids, stop strings across token boundaries, max_tokens,
the context). The sequences that stopped are handed back for the scheduler to release.

Prompt logprobs arrive chunk by chunk, possibly over several steps, and are assembled in
order; a request that asked for them gets no output until they are complete, so its
first output carries all of them (as every later one does, but a delta request's).

Sampled logprobs are kept compact (``LogprobStore``) while a sequence runs; vLLM's
``dict[int, Logprob]`` entries are made for the positions an output carries: a delta
request's new positions each time, a final_only request's all once at its end, and a
cumulative request's each once (kept, as its every output carries them all).

A delta request's outputs (``Request.delta``: the server's, and vLLM's
``RequestOutputKind.DELTA``) are deltas to the end, the finished one included: text,
token ids and logprobs added since the previous output, its prompt logprobs in its first
output only. ``cumulative_logprob`` and ``num_output_tokens`` stay whole.

Text is built incrementally only where it is read while the request runs: streamed
requests and requests with stop strings. An offline request without stop strings
(``final_only``) is detokenized once, when it finishes, by the same windowed algorithm, so
its text is the same and the per-token cost is gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sarathi.core.scheduler_output import PromptLogprobs, StepResult, TokenLogprobs
from sarathi.engine.logprob_store import LogprobStore
from sarathi.engine.stats import EngineStats
from sarathi.outputs import CompletionOutput, Logprob, RequestOutput
from sarathi.sampling_params import banned_by_options
from sarathi.sequence import Request, Sequence
from sarathi.transformers_utils.detokenizer import incremental_detokenizer

if TYPE_CHECKING:
    from adaptivocab import IncrementalDecoder, PatchTokenizer

logger = logging.getLogger("sarathi")


@dataclass
class SequenceOutput:
    """What the caller sees of one sequence."""

    detok: IncrementalDecoder | None  # None: text is made when the sequence finishes
    text: str = ""
    logprobs: LogprobStore | None = None
    # A cumulative request's entries made so far: every one of its outputs carries them all.
    built: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float = 0.0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    emitted_text_len: int = 0  # chars of text already reported to the caller
    emitted_tokens: int = 0
    emitted_logprobs: int = 0  # positions of logprobs already reported (delta outputs)
    error: str | None = None  # why it ended with finish reason "error"
    # The request's prompt logprobs so far, on its first sequence where they were asked
    # (position 0 has none).
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    prompt_logprobs_sent: bool = False  # a delta request's first output carried them


@dataclass
class StepOutcome:
    outputs: list[RequestOutput] = field(default_factory=list)
    stopped: list[Sequence] = field(default_factory=list)  # for the scheduler to release


class OutputProcessor:
    def __init__(
        self,
        decoder: Any,
        eos_ids: frozenset[int],
        max_seq_len: int,
        stats: EngineStats,
        patch: PatchTokenizer | None = None,
        eos_id: int | None = None,
    ) -> None:
        """``decoder``: the cheapest object whose ``decode`` equals the tokenizer's;
        ``patch``: the AdaptiVocab PatchTokenizer, for base-token counts (or None);
        ``eos_id``: the tokenizer's own of ``eos_ids``."""
        self._decoder = decoder
        self.eos_ids = eos_ids
        self.eos_id = eos_id
        self.max_seq_len = max_seq_len
        self.stats = stats
        self._patch = patch
        self._seqs: dict[int, SequenceOutput] = {}
        # First sequence's id -> its request, for requests that asked for prompt logprobs.
        self._scorers: dict[int, Request] = {}

    def add(self, req: Request) -> None:
        p = req.params
        # Without a tokenizer (--skip-tokenizer-init) or with detokenize=False outputs are
        # token ids alone.
        live_text = (
            self._decoder is not None and p.detokenize and (not req.final_only or bool(p.stop_list))
        )
        for seq in req.seqs:
            detok = (
                incremental_detokenizer(self._decoder, req.prompt_token_ids, p.skip_special_tokens)
                if live_text
                else None
            )
            self._seqs[seq.seq_id] = SequenceOutput(
                detok, logprobs=LogprobStore() if p.logprobs is not None else None
            )
        if p.prompt_logprobs is not None:
            first = req.seqs[0].seq_id
            self._seqs[first].prompt_logprobs = [None]
            self._scorers[first] = req

    def forget(self, req: Request) -> None:
        for seq in req.seqs:
            self._seqs.pop(seq.seq_id, None)
        self._scorers.pop(req.seqs[0].seq_id, None)

    # -- one step ----------------------------------------------------------------------------
    def process(
        self,
        seqs: list[Sequence],
        indices: list[int],
        result: StepResult,
        now: float | None = None,
        failed: dict[int, str] | None = None,
    ) -> StepOutcome:
        """``seqs[i]`` sampled ``result.token_ids[i]`` for its token ``indices[i]``;
        ``failed``: sequences (by id) whose output constraint failed on this token, with the
        reason: they end before it with finish reason "error", and their request's output
        carries the reason. So do sequences whose own options banned the token."""
        now = time.monotonic() if now is None else now
        outcome = StepOutcome()
        touched: dict[str, Request] = {}
        for chunk in result.prompt_logprobs or ():
            self._add_prompt_logprobs(chunk)
        logprobs = result.logprobs
        states = self._seqs
        kept = 0
        for i, (seq, token) in enumerate(zip(seqs, result.token_ids, strict=True)):
            if seq.finished:  # stopped (or aborted) while this step ran: drop its token
                continue
            out = states[seq.seq_id]
            index = indices[i]
            req = seq.request
            touched[req.request_id] = req
            error = failed.get(seq.seq_id) if failed else None
            if error is None and seq.params.bans_tokens:
                error = self._left_no_token(seq, token, index)
            if error is not None:
                self._end_with_error(seq, out, index, error)
                outcome.stopped.append(seq)
                continue
            kept += 1
            if index < len(seq.token_ids):  # fill in the placeholder
                seq.token_ids[index] = token
                seq.num_pending -= 1
            else:
                seq.token_ids.append(token)
            m = req.metrics
            if m.first_token_time is None:
                m.first_token_time = now
            m.last_token_time = now
            if out.logprobs is not None and logprobs is not None:
                lp = logprobs[i]
                if lp is not None:
                    out.cumulative_logprob += lp.logprob
                    out.logprobs.append(token, lp)
            if self._check_stop(seq, out, token, index):
                outcome.stopped.append(seq)
        self.stats.generation_tokens += kept
        for req in touched.values():
            finished = self._done(req)
            if not finished and (req.final_only or not self._prompt_scored(req)):
                continue
            if finished:
                req.metrics.finished_time = now
                if self._patch is not None:
                    self._count_base_tokens(req, self._patch)
            outcome.outputs.append(self.make_output(req, finished))
        return outcome

    def _add_prompt_logprobs(self, chunk: PromptLogprobs) -> None:
        req = self._scorers.get(chunk.seq_id)
        if req is None:  # aborted while its step ran
            return
        have = self._seqs[chunk.seq_id].prompt_logprobs
        assert have is not None and chunk.start <= len(have), "prompt logprobs out of order"
        prompt = req.prompt_token_ids
        # A recompute after a preemption scores positions already here again: keep the first.
        for pos in range(len(have), chunk.start + len(chunk.logprobs)):
            have.append(_entry(prompt[pos], chunk.logprobs[pos - chunk.start]))

    def _prompt_scored(self, req: Request) -> bool:
        """Its prompt logprobs are complete (or were not asked for)."""
        have = self._seqs[req.seqs[0].seq_id].prompt_logprobs
        return have is None or len(have) == len(req.prompt_token_ids)

    def _done(self, req: Request) -> bool:
        """Every sequence has its finish reason (the scheduler releases them afterwards)."""
        states = self._seqs
        return all(states[s.seq_id].finish_reason is not None for s in req.seqs)

    def _left_no_token(self, seq: Sequence, token: int, index: int) -> str | None:
        """Why ``token`` ends the sequence with an error, where the request's own options
        banned it: they left the step no token to sample (the sampler then draws from a
        row of -inf), and the output cannot go on within them."""
        p = seq.params
        num_output = index - seq.prompt_len
        long_words = any(len(w) > 1 for w in p.bad_words_token_ids)
        history = seq.token_ids[:index] if long_words else None
        if not banned_by_options(p, token, num_output, self.eos_ids, history, seq.prompt_len):
            return None
        logger.warning("request %s: its options left no token to sample", seq.request.request_id)
        return (
            f"no token was left to sample at output token {num_output + 1}: "
            "allowed_token_ids, bad_words and min_tokens (which bans the end of text and "
            "stop_token_ids until it is met) together banned every token"
        )

    def _end_with_error(self, seq: Sequence, out: SequenceOutput, index: int, error: str) -> None:
        """End the sequence before its token at ``index``, which broke its constraint: the
        output holds what came before it, with finish reason "error"."""
        del seq.token_ids[index:]
        seq.num_pending = 0
        if self._decoder is not None and seq.params.detokenize:
            if out.detok is None:
                out.text = self._whole_text(seq, drop_last=False)
            else:
                out.text += out.detok.flush()
        out.finish_reason, out.stop_reason, out.error = "error", None, error

    def _whole_text(self, seq: Sequence, drop_last: bool) -> str:
        """The sequence's output text decoded at once (``drop_last``: without its last
        token)."""
        assert self._decoder is not None
        detok = incremental_detokenizer(
            self._decoder, seq.request.prompt_token_ids, seq.params.skip_special_tokens
        )
        ids = seq.output_ids
        return detok.step(ids[:-1] if drop_last else ids) + detok.flush()

    def _check_stop(self, seq: Sequence, out: SequenceOutput, token: int, index: int) -> bool:
        """Whether ``token`` ends the sequence, and if so its finish."""
        p = seq.params
        prev_len = len(out.text)
        if out.detok is not None:
            out.text += out.detok.step(token)
        n_out = seq.num_output
        reason: str | None = None
        stop_reason: int | str | None = None
        token_stop = False  # EOS or a stop token id: its own text is left out (vLLM's rule)
        if n_out >= p.min_tokens:
            if not p.ignore_eos and token in self.eos_ids:
                reason, token_stop = "stop", True
                # vLLM's rule: the extra EOS ids of generation_config.json act as stop
                # token ids, which report themselves; the tokenizer's EOS reports none.
                if token != self.eos_id:
                    stop_reason = token
            elif token in p.stop_token_ids:
                reason, stop_reason, token_stop = "stop", token, True
            elif p.stop_list and n_out > p.min_tokens:
                # vLLM's rule: stop strings count only in text after the first min_tokens
                # tokens (EOS and stop tokens are banned from those by the sampler).
                hit = _find_stop(out.text, prev_len, p.stop_list)
                if hit is not None:
                    idx, stop = hit
                    out.text = out.text[: idx + (len(stop) if p.include_stop_str_in_output else 0)]
                    reason, stop_reason = "stop", stop
        if reason is None and (
            (p.max_tokens is not None and n_out >= p.max_tokens) or index + 1 >= self.max_seq_len
        ):
            reason = "length"
        if reason is None:
            return False
        del seq.token_ids[index + 1 :]  # a placeholder for a token that will not count
        seq.num_pending = 0
        if self._decoder is not None and p.detokenize:
            hide = token_stop and not p.include_stop_str_in_output
            # The live text already holds the stop token's; most stop tokens (EOS) are
            # special and show nothing, and only a token with text costs a decode anew. A
            # token may show text only after others (SentencePiece's lone "▁" decodes to ""
            # alone, to " " in context): the text it added counts too.
            if out.detok is None or (
                hide
                and (
                    len(out.text) > prev_len
                    or self._decoder.decode([token], skip_special_tokens=p.skip_special_tokens)
                )
            ):
                out.text = self._whole_text(seq, drop_last=hide)
            elif not isinstance(stop_reason, str):
                out.text += out.detok.flush()
        out.finish_reason, out.stop_reason = reason, stop_reason
        return True

    def _count_base_tokens(self, req: Request, patch: PatchTokenizer) -> None:
        """What the same text would have cost with the base tokenizer (AdaptiVocab metrics)."""
        n = len(req.seqs)
        s = self.stats
        s.base_prompt_tokens += n * len(patch.to_base_ids(req.prompt_token_ids))
        s.patched_prompt_tokens += n * len(req.prompt_token_ids)
        for seq in req.seqs:
            s.base_generation_tokens += len(patch.to_base_ids(seq.output_ids))
            s.patched_generation_tokens += seq.num_output

    # -- outputs -----------------------------------------------------------------------------
    def make_output(self, req: Request, finished: bool) -> RequestOutput:
        """Snapshot for the caller; text deltas are measured from the previous snapshot.
        A delta request's snapshot holds only what was added since its previous one."""
        outs = []
        # Until a sequence finishes, hold back text that could be the start of a stop string,
        # so streamed deltas never show a stop string that is later cut.
        hold = req.params.stop_hold
        delta = req.delta
        for seq in req.seqs:
            s = self._seqs[seq.seq_id]
            done = s.finish_reason is not None
            text = s.text if done or not hold else s.text[: max(0, len(s.text) - hold)]
            text = text if len(text) >= s.emitted_text_len else s.text[: s.emitted_text_len]
            text_delta = text[s.emitted_text_len :]
            num_output = seq.num_output
            emitted = s.emitted_tokens
            s.emitted_text_len = len(text)
            s.emitted_tokens = num_output
            store = s.logprobs
            logprobs = None
            if delta:
                text = text_delta
                end = seq.prompt_len + num_output
                token_ids = seq.token_ids[end - (num_output - emitted) : end]
                if store is not None:
                    logprobs = store.entries(s.emitted_logprobs, len(store))
                    s.emitted_logprobs = len(store)
            else:
                token_ids = seq.output_ids  # a fresh slice
                if store is not None:
                    logprobs = self._all_entries(req, s, store)
            outs.append(
                CompletionOutput(
                    index=seq.index,
                    text=text,
                    token_ids=token_ids,
                    cumulative_logprob=s.cumulative_logprob if store is not None else None,
                    logprobs=logprobs,
                    finish_reason=s.finish_reason,
                    stop_reason=s.stop_reason,
                    text_delta=text_delta,
                    num_new_tokens=num_output - emitted,
                    num_output_tokens=num_output,
                )
            )
        errors = [self._seqs[seq.seq_id].error for seq in req.seqs]
        first = self._seqs[req.seqs[0].seq_id]
        prompt_logprobs = first.prompt_logprobs
        if delta:
            # vLLM's DELTA: the prompt's logprobs come with the first output only.
            if first.prompt_logprobs_sent:
                prompt_logprobs = None
            first.prompt_logprobs_sent = True
        return RequestOutput(
            req.request_id,
            req.prompt,
            req.prompt_token_ids,
            outs,
            finished,
            req.metrics,
            error=next((e for e in errors if e is not None), None),
            num_cached_tokens=req.num_cached_tokens,
            prompt_logprobs=prompt_logprobs,
        )

    @staticmethod
    def _all_entries(
        req: Request, s: SequenceOutput, store: LogprobStore
    ) -> list[dict[int, Logprob]]:
        """Every position's entry: made once for a final_only request, at its end; kept and
        extended for a cumulative one (the list is the engine's: callers on another thread
        copy it, see ``AsyncEngine``)."""
        if req.final_only:
            return store.entries(0, len(store))
        if s.built is None:
            s.built = []
        s.built += store.entries(len(s.built), len(store))
        return s.built


def _entry(token: int, lp: TokenLogprobs) -> dict[int, Logprob]:
    """vLLM's logprobs entry of one position: the token's, then its top alternatives."""
    entry = {token: Logprob(lp.logprob, lp.rank)}
    for tid, value, rank in lp.top:
        entry.setdefault(tid, Logprob(value, rank))
    return entry


def _find_stop(text: str, prev_len: int, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """Earliest stop string that ends in the newly added text."""
    best = None
    for stop in stops:
        idx = text.find(stop, max(0, prev_len - len(stop) + 1))
        if idx != -1 and (best is None or idx < best[0]):
            best = (idx, stop)
    return best
