"""The engine loop: schedule, launch, process. Readable in one sitting by design.

    step():
        plan = scheduler.schedule()          # which sequences, how many tokens each
        launch(plan)                         # model forward + sampling queued on the device
        process(the previous step's tokens)  # stops, text, outputs (output_processor.py)

With an executor that overlaps (in-process or ``mp``; ``--overlap-scheduling``, on by
default with a CUDA device) step N+1 is scheduled and launched before step N's tokens reach
the host: each sequence sampled by step N gets a PENDING_TOKEN placeholder, which the
runner fills on the device from step N's ids, and the host processes step N while the GPU
runs step N+1. A sequence that stopped at step N (EOS, a stop string) computes one more
token in step N+1, which is dropped. Length limits are known ahead, so such a sequence is
not scheduled again. While a request that samples with penalties or multi-token bad words
is unfinished, sampling needs the exact history: step N is collected before step N+1 is
scheduled. Steps with grammar-constrained rows (structured
outputs) launch N+1's forward alone, process step N, compute N+1's grammar masks while that
forward runs, then queue N+1's sampling. Without overlap each step is collected as soon as
it is launched.
"""

from __future__ import annotations

import collections.abc
import copy
import hashlib
import itertools
import logging
import numbers
import time
from dataclasses import dataclass, replace
from typing import Any

from sarathi.config import EngineConfig, ModelConfig
from sarathi.core.prefix_cache import PrefixCache
from sarathi.core.scheduler import Scheduler, SchedulerStep
from sarathi.engine.model_setup import ModelSetup, resolve_chunk_size, resolve_model
from sarathi.engine.output_processor import OutputProcessor
from sarathi.engine.stats import EngineSnapshot, EngineStats
from sarathi.engine.unread_flags import warn_unread_flags
from sarathi.executor import StepHandle, WorkerError, create_executor
from sarathi.model_executor.model_shape import ModelShape
from sarathi.outputs import RequestOutput
from sarathi.reasoning import ReasoningParser, make_reasoning_parser
from sarathi.sampling_params import SamplingParams, first_token_bans
from sarathi.sequence import PENDING_TOKEN, Request, Sequence
from sarathi.structured_output import StructuredOutputManager
from sarathi.transformers_utils.detokenizer import streaming_decoder
from sarathi.worker.cache_engine import budget_flag
from sarathi.worker.worker import WorkerSpec

logger = logging.getLogger("sarathi")


# OpenAI's error code for a prompt (with its completion) longer than the model's context.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class RequestError(ValueError):
    """A request that cannot be served as asked (e.g. its prompt is longer than the context);
    ``param``: the request field at fault, where one is; ``code``: a machine-readable
    name of the problem, where clients test for one (OpenAI's ``context_length_exceeded``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class InflightStep:
    """A launched step: its plan, and the sequences it samples in sampling order with the
    index each sampled token takes in its sequence."""

    plan: SchedulerStep
    sampled: list[Sequence]
    indices: list[int]
    handle: StepHandle


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.setup: ModelSetup = resolve_model(config)
        m = self.setup
        # Before the weights load: a tokenizer without the tags fails the start at once.
        name = config.model.reasoning_parser
        self.reasoning: ReasoningParser | None = (
            make_reasoning_parser(name, m.tokenizer) if name else None
        )
        given = config  # as the user gave it: warn_unread_flags tells set flags from defaults
        # The derived token budget travels in a copy of the config: the user's is unchanged.
        config = replace(
            config,
            scheduler=replace(config.scheduler, chunk_size=resolve_chunk_size(config, m.device)),
        )
        self.config = config
        self.tokenizer = m.tokenizer
        self.executor = create_executor(
            WorkerSpec(
                config,
                m.path,
                m.shape,
                m.dtype,
                m.device,
                m.max_model_len,
                m.eos_ids,
                m.reduction_ratio,
                m.patch_at_load,
                config.model.resolved_init_method,
            )
        )
        capacity = self.executor.capacity()
        self.cache_plan = self.executor.cache_plan()
        self.prefix_cache = self._prefix_cache(capacity.tokens_per_block)
        self.scheduler = Scheduler(config.scheduler, capacity, m.max_model_len, self.prefix_cache)
        # A sequence may never outgrow what the whole cache holds, so one alone always fits.
        self.max_seq_len = min(m.max_model_len, capacity.max_tokens)
        # Where the whole cache holds fewer tokens than max_model_len, it is a request's
        # limit: errors and warnings then name the budget's flag, not the model's context.
        self.cache_bound = self.max_seq_len < m.max_model_len
        # The flag that set the cache's size (--gpu-memory-utilization on a GPU without
        # --kv-cache-memory), for the errors and warnings that ask for a larger one.
        self._budget_flag = budget_flag(config.cache, m.device)
        self.stats = EngineStats()
        # Tokens the latest step() ran through the model (prompt chunks and decodes); 0 for
        # a step that ran none. Read after each step (the metrics' iteration_tokens_total).
        self.last_step_tokens = 0
        self.output_processor = OutputProcessor(
            streaming_decoder(m.tokenizer),
            m.eos_ids,
            self.max_seq_len,
            self.stats,
            m.patch,
            m.eos_id,
        )
        overlap = config.scheduler.overlap_scheduling
        if overlap is None:
            overlap = m.device.type == "cuda"
        self._overlap = overlap and self.executor.overlaps
        self.structured = StructuredOutputManager(
            m.tokenizer, m.eos_ids, self.reasoning.tags if self.reasoning else None
        )
        self._inflight: InflightStep | None = None
        # The first worker failure a step raised; the engine is unusable afterwards.
        self._worker_error: WorkerError | None = None
        self.requests: dict[str, Request] = {}
        # The unfinished requests whose sampling reads every earlier token (needs_history).
        self._history_requests: set[str] = set()
        self._seq_ids = itertools.count()
        self._req_ids = itertools.count()
        plan = self.cache_plan
        warn_unread_flags(given, m, plan, capacity)
        if self.cache_bound:
            logger.warning(
                "the KV cache holds %d tokens, fewer than max_model_len (%d): no request can "
                "grow past %d tokens; raise %s or lower --max-model-len",
                capacity.max_tokens,
                m.max_model_len,
                self.max_seq_len,
                self._budget_flag,
            )
        logger.info(
            "model %s (%s, %s on %s); KV cache: %s backend, %s layout, %d slots x %d tokens "
            "(%d base-tokenizer tokens of text at reduction ratio %.3f), %.2f GiB physical",
            m.name,
            m.shape.architecture,
            str(m.dtype).replace("torch.", ""),
            m.device,
            plan.backend,
            plan.layout,
            plan.max_slots,
            self.max_seq_len,
            self.text_capacity_base_tokens,
            m.reduction_ratio,
            plan.budget / 1024**3,
        )

    def _prefix_cache(self, tokens_per_block: int) -> PrefixCache | None:
        asked = self.config.cache.enable_prefix_caching  # None: the default, on
        if asked is False:
            return None
        if self.cache_plan.backend == "dense":
            # A warning where the user asked for it (--enable-prefix-caching, with dense
            # named or fallen back to): it is not done.
            (logger.warning if asked else logger.info)(
                "prefix caching is off: the dense KV cache cannot map one block under two "
                "slots (the cuda, cpu and paged caches can)"
            )
            return None
        logger.info("prefix caching: blocks of %d tokens are shared", tokens_per_block)
        return PrefixCache(tokens_per_block, prefix_fingerprint(self.setup))

    # -- what the engine serves --------------------------------------------------------------
    @property
    def shape(self) -> ModelShape:
        return self.setup.shape

    @property
    def text_capacity_base_tokens(self) -> int:
        """Longest request a slot holds, in base-tokenizer tokens of text."""
        return int(self.max_seq_len / self.setup.reduction_ratio)

    def get_tokenizer(self) -> Any:
        """The tokenizer (None with --skip-tokenizer-init), as vLLM's engine hands it out."""
        return self.tokenizer

    @property
    def model_config(self) -> ModelConfig:
        """vLLM's ``llm_engine.model_config``: the model's options, with ``max_model_len`` the
        context length in use (the model's, or --max-model-len's), which vLLM scripts read to
        size their prompts."""
        return replace(self.config.model, max_model_len=self.setup.max_model_len)

    def get_model_config(self) -> ModelConfig:
        """vLLM's ``get_model_config()``: ``model_config``."""
        return self.model_config

    # -- requests ----------------------------------------------------------------------------
    def add_request(
        self,
        prompt: str | collections.abc.Sequence[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        arrival_time: float | None = None,
        final_only: bool = False,
        cache_salt: str | None = None,
        delta: bool = False,
        priority: int = 0,
        client: str | None = None,
    ) -> Request:
        """Queue a request. ``final_only``: ``step()`` returns its output once, when it
        finishes, instead of a snapshot at every step (what offline generation reads).
        ``delta`` (or ``params.output_kind`` DELTA, vLLM's): every snapshot, the finished
        one too, carries in ``text``, ``token_ids`` and ``logprobs`` only what was added
        since the previous snapshot (what a stream reads); ``final_only`` wins over it.
        ``cache_salt``: it shares prefix-cache blocks only with requests of the same salt.
        ``priority`` (vLLM's): lower is served sooner under the priority scheduling policy;
        under fcfs anything but 0 is refused, as vLLM refuses it. ``client``: who sent it
        (the server passes the API key's name or the caller's address); the requests of
        different clients take turns in the waiting queue, one sample a turn, so one
        client's many queued requests do not hold another's behind them."""
        if params is not None and not isinstance(params, SamplingParams):
            # vLLM's engine takes (request_id, prompt, params): that order would fail later
            # with "'str' object has no attribute 'verify'".
            raise TypeError(
                "add_request takes (prompt, params, request_id=...); params must be a "
                f"SamplingParams, got {type(params).__name__}"
            )
        self.validate_priority(priority)
        params = params or SamplingParams()
        try:
            params.verify()  # its fields may have been set after it was built
        except ValueError as e:
            raise RequestError(str(e)) from e
        final_only, delta = params.output_modes(final_only, delta)
        if self.tokenizer is None and (
            isinstance(prompt, str) or params.stop_list or params.bad_words
        ):
            raise RequestError(
                "this engine runs without a tokenizer (--skip-tokenizer-init): prompts must be "
                "token ids, and stop strings and bad_words cannot be matched"
            )
        if params.bad_words:
            # A copy: the caller's params may serve other requests (and other tokenizers).
            words = params.bad_words
            params = copy.copy(params)
            params.bad_words_token_ids = bad_words_token_ids(words, self.tokenizer)
        if isinstance(prompt, str):
            text, ids = prompt, self.tokenizer.encode(prompt)
        else:
            text, ids = None, list(map(int, prompt))
        ids = self.truncate_prompt(ids, params.truncate_prompt_tokens)
        request_id = request_id or f"req-{next(self._req_ids)}"
        if request_id in self.requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        self.validate_prompt(ids)
        self.validate_params(params)
        params = self._whole_vocabulary(params)
        spec = params.structured_outputs
        if spec is not None:
            try:
                self.structured.compile(spec)
            except ValueError as e:
                raise RequestError(str(e)) from e
        req = Request(
            request_id,
            text,
            ids,
            params,
            arrival_time=arrival_time if arrival_time is not None else time.monotonic(),
            final_only=final_only,
            cache_salt=cache_salt,
            delta=delta,
            priority=int(priority),
            client=client,
        )
        for i in range(params.n):
            req.seqs.append(Sequence(next(self._seq_ids), i, req, list(ids), len(ids)))
        if spec is not None:
            self.structured.add([s.seq_id for s in req.seqs], spec, ids)
        self.output_processor.add(req)
        for seq in req.seqs:
            self.scheduler.add(seq)
        self.requests[request_id] = req
        if params.needs_history:
            self._history_requests.add(request_id)
        self.stats.prompt_tokens += len(ids) * params.n
        return req

    def truncate_prompt(self, ids: list[int], keep: int | None) -> list[int]:
        """vLLM's ``truncate_prompt_tokens``: the prompt's last ``keep`` tokens (left
        truncation: the last tokens are the ones next to the answer); -1 keeps the most the
        context takes with one token left to generate; None keeps them all. The server
        applies it too, before it checks the prompt's length."""
        if keep is None:
            return ids
        return ids[-(self.max_seq_len - 1 if keep == -1 else keep) :]

    def validate_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise RequestError("the prompt is empty")
        self._check_in_vocab(ids, "prompt token ids")
        if len(ids) >= self.max_seq_len:
            # Naming the model's context where the cache is the limit sends the user to the
            # wrong setting.
            limit = "the whole KV cache holds" if self.cache_bound else "this model's context is"
            raise RequestError(
                f"the prompt has {len(ids)} tokens; {limit} {self.max_seq_len} tokens "
                "including at least one generated token"
                + (f" (raise {self._budget_flag})" if self.cache_bound else ""),
                code=CONTEXT_LENGTH_EXCEEDED,
            )

    def validate_priority(self, priority: int) -> None:
        """A request's priority must be an integer, and 0 unless the scheduling policy is
        priority (vLLM's rule: elsewhere a priority would be dropped without a word)."""
        if not isinstance(priority, numbers.Integral) or isinstance(priority, bool):
            raise RequestError(
                f"priority must be an integer, got {type(priority).__name__}", "priority"
            )
        if priority != 0 and self.config.scheduler.scheduling_policy != "priority":
            raise RequestError(priority_refused(priority), "priority")

    def validate_params(self, params: SamplingParams) -> None:
        """Token ids a request names must be the model's: out-of-range ids in logit_bias or
        allowed_token_ids would otherwise be dropped (all of allowed_token_ids: every logit
        masked, and token 0 sampled). allowed_token_ids must leave a first token to sample
        (a later step they leave none ends the request with an error). Its logprobs are
        within max_logprobs."""
        for name, ids in (
            ("logit_bias", params.logit_bias or ()),
            ("allowed_token_ids", params.allowed_token_ids or ()),
        ):
            self._check_in_vocab(ids, f"{name} has token ids", name)
        allowed, eos_ids = params.allowed_set, self.output_processor.eos_ids
        if allowed is not None and allowed <= first_token_bans(params, eos_ids):
            raise RequestError(
                "allowed_token_ids leaves no token to sample: each is a one-token bad word or, "
                "while min_tokens is unmet, the end of text or a stop token id",
                "allowed_token_ids",
            )
        self.check_logprobs(params.logprobs, "logprobs")
        self.check_logprobs(params.prompt_logprobs, "prompt_logprobs")

    @property
    def max_logprobs(self) -> int:
        """The most logprobs a request may ask for: --max-logprobs, where -1 (no cap) and
        any larger value mean the vocabulary's size, past which the sampler's top-k of a
        row of logits fails inside the step."""
        vocab = self.setup.shape.vocab_size
        cap = self.config.model.max_logprobs
        return vocab if cap == -1 else min(cap, vocab)

    def logprobs_count(self, count: int) -> int:
        """How many logprobs a request's count asks for: -1 (vLLM's) is the whole
        vocabulary."""
        return self.setup.shape.vocab_size if count == -1 else count

    def check_logprobs(self, count: int | None, param: str) -> None:
        """RequestError naming ``param`` (the request's name for the count: the server's
        chat calls it top_logprobs) where ``count`` passes ``max_logprobs``. A count that
        is not an integer is left to SamplingParams.verify, which names it."""
        cap = self.max_logprobs
        if isinstance(count, bool) or not isinstance(count, numbers.Integral):
            return
        if self.logprobs_count(count) <= cap:
            return
        asked = f"{param} {count}"
        if count == -1:
            asked += f" (the whole vocabulary, {self.setup.shape.vocab_size} tokens)"
        if cap == self.config.model.max_logprobs:
            why = (
                f"max_logprobs ({cap}); ask for at most {cap}, or start the engine with a "
                "larger max_logprobs (--max-logprobs; -1: up to the vocabulary's size)"
            )
        else:
            why = f"the vocabulary's size ({cap}); ask for at most {cap}"
        raise RequestError(f"{asked} is more than {why}", param)

    def _whole_vocabulary(self, params: SamplingParams) -> SamplingParams:
        """``params`` with a logprobs count of -1 as the vocabulary's size (on a copy: the
        caller's params may serve other requests); the sampler takes counts only."""
        if -1 not in (params.logprobs, params.prompt_logprobs):
            return params
        params = copy.copy(params)
        if params.logprobs == -1:
            params.logprobs = self.logprobs_count(-1)
        if params.prompt_logprobs == -1:
            params.prompt_logprobs = self.logprobs_count(-1)
        return params

    def _check_in_vocab(
        self, ids: collections.abc.Iterable[int], what: str, param: str | None = None
    ) -> None:
        vocab = self.setup.shape.vocab_size
        ids = list(ids)
        if not ids or (min(ids) >= 0 and max(ids) < vocab):
            return
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"{what} out of range [0, {vocab}): {bad[:5]}", param)

    def abort_request(self, request_id: str) -> None:
        req = self.requests.get(request_id)
        if req is None:
            return
        for seq in req.seqs:
            if not seq.finished:
                self.scheduler.finish(seq)
            self.structured.remove(seq.seq_id)
        self._forget(request_id)
        if self._idle():  # no step will come to hand its slot back
            self._release_finished()

    def reset_prefix_cache(self) -> int:
        """Drop every cached block no running request uses (vLLM's reset, e.g. between
        benchmark runs); returns how many. Blocks running requests share stay."""
        dropped = self.scheduler.drop_cached_blocks()
        if self._idle():  # no step will come to tell the workers
            self._release_finished()
        return dropped

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or self._inflight is not None

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        # After a worker failure the steps in flight never return their tokens: a later
        # step may schedule nothing (every running sequence waits on a lost token) and
        # return empty for ever, so every step raises instead.
        if self._worker_error is not None:
            raise type(self._worker_error)(
                f"the engine is unusable after an earlier failure: {self._worker_error}"
            )
        try:
            return self._step()
        except WorkerError as e:
            self._worker_error = e
            raise

    def _step(self) -> list[RequestOutput]:
        outputs = []
        if self._inflight is not None and self._history_requests:
            # Penalties and multi-token bad words read every earlier token's value: the plan
            # is made from collected tokens. (Collecting after planning could change the
            # planned sequences: one that finishes, or takes its last token, would no longer
            # sample where the plan does.)
            outputs = self._collect()
        plan = self.scheduler.schedule()
        self.stats.preemptions += len(plan.preempted)
        self.last_step_tokens = plan.input.num_tokens
        if not plan.input.has_work:
            outputs += self._collect()
            if plan.input.has_bookkeeping:
                self.executor.collect(self.executor.launch(plan.input))  # frees slots
        else:
            launched = self._launch(plan)
            outputs += self._collect()  # the previous step, processed while this one runs
            if plan.input.masks_follow:
                # The masks follow from the tokens just processed; the forward runs meanwhile.
                self.executor.sample(launched.handle, self.structured.masks(launched.sampled))
            self._inflight = launched
            if not self._overlap:
                outputs += self._collect()
        if self._idle():
            self._release_finished()
        return outputs

    def _idle(self) -> bool:
        """Nothing in flight, running or waiting: finished sequences' slots are freed now."""
        return self._inflight is None and not self.scheduler.running and not self.scheduler.waiting

    def _launch(self, plan: SchedulerStep) -> InflightStep:
        sampled, indices = self.account(plan)
        if self.structured:
            if self._inflight is None:  # every token so far is processed: masks are known
                plan.input.token_masks = self.structured.masks(sampled)
            else:
                plan.input.masks_follow = any(s.seq_id in self.structured for s in sampled)
        return InflightStep(plan, sampled, indices, self.executor.launch(plan.input))

    def account(self, plan: SchedulerStep) -> tuple[list[Sequence], list[int]]:
        """Count the scheduled tokens as computed; return the sequences that sample, in
        sampling order, with the index each sampled token takes. With overlap each gets a
        placeholder so the next schedule can feed its token back."""
        now = time.monotonic()
        sampled: list[Sequence] = []
        indices: list[int] = []
        overlap = self._overlap
        for seq in plan.decodes:
            seq.num_computed += 1
            self._on_sample(seq, sampled, indices, overlap)
        for seq, n in plan.chunks:
            seq.num_computed += n
            m = seq.request.metrics
            if m.first_scheduled_time is None:
                m.first_scheduled_time = now
            if seq.num_computed == len(seq.token_ids):
                self._on_sample(seq, sampled, indices, overlap)
        return sampled, indices

    def _on_sample(
        self, seq: Sequence, sampled: list[Sequence], indices: list[int], overlap: bool
    ) -> None:
        index = len(seq.token_ids)
        sampled.append(seq)
        indices.append(index)
        if overlap and not self._is_last_token(seq, index):
            seq.token_ids.append(PENDING_TOKEN)
            seq.num_pending += 1

    def _collect(self) -> list[RequestOutput]:
        """Wait for the step in flight, if any, and process its tokens."""
        if self._inflight is None:
            return []
        launched, self._inflight = self._inflight, None
        result = self.executor.collect(launched.handle)
        if not launched.sampled and not result.prompt_logprobs:
            return []
        failed = {}
        if self.structured:
            failed = self.structured.accept(launched.sampled, result.token_ids, launched.indices)
        outcome = self.output_processor.process(
            launched.sampled, launched.indices, result, failed=failed
        )
        for seq in outcome.stopped:
            self.scheduler.finish(seq)
            self.structured.remove(seq.seq_id)
        for out in outcome.outputs:
            if out.finished:
                self._forget(out.request_id)
        return outcome.outputs

    def _forget(self, request_id: str) -> None:
        self.output_processor.forget(self.requests.pop(request_id))
        self._history_requests.discard(request_id)

    def _release_finished(self) -> None:
        """Hand the workers what the scheduler freed (finished sequences' slots, evicted
        blocks) now rather than at the next step (idle engine)."""
        # Failed workers have nothing to free, and their error raised from here (an abort
        # in LLM.generate's cleanup) would hide the one that ended the step.
        if self._worker_error is not None or not self.executor.is_alive():
            return
        if self.scheduler.has_work():
            plan = self.scheduler.schedule()
            self.executor.collect(self.executor.launch(plan.input))

    def _is_last_token(self, seq: Sequence, index: int) -> bool:
        """Whether the token sampled at ``index`` ends the sequence by length."""
        p = seq.params
        return (
            p.max_tokens is not None and index + 1 - seq.prompt_len >= p.max_tokens
        ) or index + 1 >= self.max_seq_len

    # -- introspection -----------------------------------------------------------------------
    def cache_stats(self) -> dict[str, Any]:
        return self.executor.cache_stats()

    def snapshot(self) -> EngineSnapshot:
        """A read-only copy of the engine's state and counters, for /metrics and /health."""
        m = self.setup
        stats = replace(self.stats)
        pc = self.prefix_cache
        if pc is not None:
            stats.prefix_cache_queries = pc.counters.queries
            stats.prefix_cache_hits = pc.counters.hits
            stats.prefix_cache_evictions = pc.counters.evictions
        return EngineSnapshot(
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            stats=stats,
            cache=dict(self.cache_stats()),
            reduction_ratio=m.reduction_ratio,
            text_capacity_base_tokens=self.text_capacity_base_tokens,
            patched=m.patch is not None,
            prefix_cached_blocks=pc.num_cached if pc is not None else 0,
            prefix_evictable_blocks=pc.num_evictable if pc is not None else 0,
        )

    def is_alive(self) -> bool:
        """False once a worker died or failed (then every step raises ``WorkerError``);
        cheap and non-blocking, for health checks between steps."""
        return self.executor.is_alive()

    def shutdown(self) -> None:
        self.executor.shutdown()


def priority_refused(priority: int) -> str:
    """Why a nonzero priority is refused under the fcfs policy, and what to do."""
    return (
        f"got priority {priority} but priority scheduling is not enabled: requests are "
        "served first come, first served; start the engine with --scheduling-policy "
        "priority (LLM(scheduling_policy='priority')) or send priority 0"
    )


def prefix_fingerprint(m: ModelSetup) -> str:
    """What a cached block's K/V depend on besides its tokens: the weights and the meaning
    of the token ids (a patch tokenizer gives some ids other meanings)."""
    parts = [m.path, str(m.patch_at_load), str(m.dtype)]
    if m.patch is not None:
        parts.append(repr(sorted(m.patch.patch.ngrams.items())))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def bad_words_token_ids(words: list[str], tokenizer: Any) -> list[list[int]]:
    """Each word's token ids as written and as a word after a space (vLLM's two variants:
    tokenizers spell a word differently at the start of a text and after a space)."""
    out: list[list[int]] = []
    for word in words:
        for text in (word, " " + word.lstrip()):
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            if ids and ids not in out:
                out.append(ids)
    return out
