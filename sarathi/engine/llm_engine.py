"""The engine loop: schedule, launch, process. Readable in one sitting by design.

    step():
        plan = scheduler.schedule()          # which sequences, how many tokens each
        launched = executor.launch(plan)     # model forward + sampling queued on the device
        process(previous step's results)     # append tokens, detokenize, stop checks, free

With one in-process worker and ``--overlap-scheduling`` (off by default) step N+1 is scheduled
and launched before step N's tokens reach the host: each sequence sampled by step N gets a
PENDING_TOKEN placeholder that the runner fills from step N's ids on the device, and the
host detokenizes and checks stops for step N while the GPU runs step N+1. A sequence that
stopped at step N (EOS, a stop string) computes one more token in step N+1, which is
dropped. Length limits are known ahead, so such a sequence is not scheduled again. Steps
that sample with penalties need the exact history and collect step N first.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from sarathi.config import EngineConfig
from sarathi.core.scheduler import Scheduler, SchedulerStep
from sarathi.core.scheduler_output import PENDING_TOKEN, SampledToken, StepResult
from sarathi.executor import create_executor
from sarathi.model_executor.model_config import load_model_shape
from sarathi.outputs import Logprob, RequestOutput
from sarathi.sampling_params import SamplingParams
from sarathi.sequence import Request, Sequence
from sarathi.transformers_utils.demo import DEMO_NOTE
from sarathi.transformers_utils.detokenizer import IncrementalDetokenizer, streaming_decoder
from sarathi.transformers_utils.hub import DEMO_NAMES, resolve_model_path
from sarathi.transformers_utils.tokenizer import (eos_token_ids, get_tokenizer,
                                                   is_patch_tokenizer_dir)

logger = logging.getLogger("sarathi")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RequestError(ValueError):
    """A request that cannot be served as asked (e.g. its prompt is longer than the context)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return device


def resolve_dtype(name: str, checkpoint_dtype: str | None, device: torch.device) -> torch.dtype:
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cpu":
        return torch.float32  # half precision matmuls are slow or missing on most CPUs
    return _DTYPES.get(str(checkpoint_dtype), torch.bfloat16)


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        mc = config.model
        self.is_demo = mc.model in DEMO_NAMES
        if self.is_demo:
            logger.warning("using the %s", DEMO_NOTE)
        self.model_path = resolve_model_path(mc.model)
        self.shape = load_model_shape(self.model_path)
        self.tokenizer = get_tokenizer(mc.tokenizer or self.model_path, mc.patch_tokenizer)
        self.patch = self.tokenizer if hasattr(self.tokenizer, "to_base_ids") else None
        patch_at_load = None
        if self.patch is not None:
            from adaptivocab import AdaptiVocabError, check_vocab

            try:
                check_vocab(self.shape.vocab_size, len(self.tokenizer))
            except AdaptiVocabError as e:
                raise ValueError(f"the patch tokenizer does not fit this model: {e}") from e
            if mc.patch_tokenizer is not None and not is_patch_tokenizer_dir(self.model_path):
                patch_at_load = mc.patch_tokenizer
        self.reduction_ratio = (self.patch.reduction_ratio or 1.0) if self.patch else 1.0
        self.device = resolve_device(mc.device)
        self.dtype = resolve_dtype(mc.dtype, self.shape.torch_dtype, self.device)
        self.max_model_len = mc.max_model_len or self.shape.max_position_embeddings
        self.eos_ids = frozenset(eos_token_ids(self.tokenizer, self.model_path))
        self._decoder = streaming_decoder(self.tokenizer)
        from sarathi.worker.worker import WorkerSpec

        spec = WorkerSpec(config, self.model_path, self.shape, self.dtype, self.device,
                          self.max_model_len, self.eos_ids, self.reduction_ratio, patch_at_load,
                          mc.init_method)
        self.executor = create_executor(spec)
        capacity = self.executor.capacity()
        self.cache_plan = self.executor.cache_plan()
        self.scheduler = Scheduler(config.scheduler, capacity, self.max_model_len)
        # A sequence may never outgrow what the whole cache holds, so one alone always fits.
        self.max_seq_len = min(self.max_model_len, capacity.max_tokens)
        logger.info(
            "model %s (%s, %s on %s); KV cache: %s backend, %s layout, %d slots x %d tokens "
            "(%d base-tokenizer tokens of text at reduction ratio %.3f), %.2f GiB physical",
            mc.model, self.shape.architecture, str(self.dtype).replace("torch.", ""),
            self.device, self.cache_plan.backend, self.cache_plan.layout,
            self.cache_plan.max_slots, self.max_seq_len,
            self.cache_plan.text_capacity_base_tokens, self.reduction_ratio,
            self.cache_plan.budget / 1024**3)
        self.requests: dict[str, Request] = {}
        overlap = config.scheduler.overlap_scheduling
        if overlap is None:
            overlap = self.device.type == "cuda"
        self._overlap = overlap and getattr(self.executor, "overlaps", False)
        self._inflight: LaunchedStep | None = None
        self._seq_ids = itertools.count()
        self._req_ids = itertools.count()
        self.stats = EngineStats()

    # -- requests ----------------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, arrival_time: float | None = None,
                    final_only: bool = False) -> Request:
        """Queue a request. ``final_only``: ``step()`` returns its output once, when it
        finishes, instead of a snapshot at every step (what offline generation reads)."""
        params = params or SamplingParams()
        if isinstance(prompt, str):
            text, ids = prompt, self.tokenizer.encode(prompt)
        else:
            text, ids = None, [int(t) for t in prompt]
        request_id = request_id or f"req-{next(self._req_ids)}"
        if request_id in self.requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        self.validate_prompt(ids)
        req = Request(request_id, text, ids, params,
                      arrival_time=arrival_time if arrival_time is not None else time.monotonic(),
                      final_only=final_only)
        for i in range(params.n):
            seq = Sequence(next(self._seq_ids), i, req, list(ids), len(ids))
            seq.detok = IncrementalDetokenizer(self._decoder, ids, params.skip_special_tokens)
            if params.logprobs is not None:
                seq.logprobs = []
            req.seqs.append(seq)
            self.scheduler.add(seq)
        self.requests[request_id] = req
        self.stats.prompt_tokens += len(ids) * params.n
        return req

    def validate_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise RequestError("the prompt is empty")
        vocab = self.shape.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"prompt token ids out of range [0, {vocab}): {bad[:5]}")
        if len(ids) >= self.max_seq_len:
            raise RequestError(
                f"the prompt has {len(ids)} tokens; this model's context is {self.max_seq_len} "
                "tokens including at least one generated token")

    def abort_request(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        for seq in req.seqs:
            if not seq.finished:
                seq.finish_reason = "abort"
                self.scheduler.finish(seq)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or self._inflight is not None

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        plan = self.scheduler.schedule()
        if plan.empty and not plan.input.finished and not plan.input.preempted:
            return self._drain()
        outputs = self._drain() if self._needs_history(plan) else []
        launched = self._launch(plan)
        outputs += self._drain()
        if self._overlap:
            self._inflight = launched
        else:
            outputs += self._finish(launched)
        if not self.scheduler.running and not self.scheduler.waiting:
            self._release_finished()
        return outputs

    def _drain(self) -> list[RequestOutput]:
        """Collect and process the step in flight, if any."""
        if self._inflight is None:
            return []
        launched, self._inflight = self._inflight, None
        return self._finish(launched)

    def _release_finished(self) -> None:
        """Free finished sequences' slots now rather than at the next step (idle engine)."""
        if self._inflight is not None:
            return  # the next step collects it and frees them then
        plan = self.scheduler.schedule()
        if plan.input.finished:
            self.executor.execute(plan.input)

    def _launch(self, plan: SchedulerStep) -> "LaunchedStep":
        launched = self.commit(plan)
        if self._overlap:
            launched.handle = self.executor.launch(plan.input)
        else:
            launched.handle = self.executor.execute(plan.input)
        return launched

    def commit(self, plan: SchedulerStep) -> "LaunchedStep":
        """Account the scheduled tokens as computed. With overlap, each sequence that samples
        gets a placeholder so the next schedule can feed its token back."""
        now = time.monotonic()
        self.stats.preemptions += len(plan.preempted)
        sampled: dict[int, int] = {}
        for seq, n in plan.scheduled:
            seq.num_computed += n
            req = seq.request
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
            if seq.num_computed == len(seq.token_ids):
                index = len(seq.token_ids)
                sampled[seq.seq_id] = index
                if self._overlap and not self._is_last_token(seq, index):
                    seq.token_ids.append(PENDING_TOKEN)
                    seq.num_pending += 1
        return LaunchedStep(plan, sampled)

    def _finish(self, launched: "LaunchedStep") -> list[RequestOutput]:
        result = launched.handle
        if self._overlap:
            result = self.executor.collect(launched.handle)
        return self.process(launched, result)

    def _is_last_token(self, seq: Sequence, index: int) -> bool:
        """Whether the token sampled at ``index`` ends the sequence by length."""
        p = seq.params
        return ((p.max_tokens is not None and index + 1 - seq.prompt_len >= p.max_tokens)
                or index + 1 >= self.max_seq_len)

    @staticmethod
    def _needs_history(plan: SchedulerStep) -> bool:
        """Penalties read every earlier token's value when sampling."""
        return any(seq.params.has_penalties for seq, _ in plan.scheduled)

    def process(self, launched: "LaunchedStep", result: StepResult) -> list[RequestOutput]:
        now = time.monotonic()
        touched: dict[str, Request] = {}
        for tok in result.sampled:
            seq = self._seq_by_id(launched.plan, tok.seq_id)
            if seq.finished:  # stopped (or aborted) while this step ran: drop its token
                continue
            self._append_token(seq, tok, now, launched.sampled[tok.seq_id])
            touched[seq.request.request_id] = seq.request
        outputs = []
        for req in touched.values():
            finished = req.finished
            if req.final_only and not finished:
                continue
            out = req.make_output()
            if finished:
                req.metrics.finished_time = now
                self.requests.pop(req.request_id, None)
                if self.patch is not None:
                    self._count_base_tokens(req)
            outputs.append(out)
        return outputs

    def _seq_by_id(self, plan: SchedulerStep, seq_id: int) -> Sequence:
        if plan.index is None:
            plan.index = {s.seq_id: s for s, _ in plan.scheduled}
        return plan.index[seq_id]

    def _append_token(self, seq: Sequence, tok: SampledToken, now: float, index: int) -> None:
        p = seq.params
        if index < len(seq.token_ids):  # fill in the placeholder
            seq.token_ids[index] = tok.token_id
            seq.num_pending -= 1
        else:
            seq.token_ids.append(tok.token_id)
        self.stats.generation_tokens += 1
        m = seq.request.metrics
        if m.first_token_time is None:
            m.first_token_time = now
        m.last_token_time = now
        if seq.logprobs is not None and tok.logprob is not None:
            seq.cumulative_logprob += tok.logprob
            entry = {tok.token_id: Logprob(tok.logprob, tok.rank)}
            for tid, lp, rank in tok.top or []:
                entry.setdefault(tid, Logprob(lp, rank))
            seq.logprobs.append(entry)
        prev_len = len(seq.text)
        seq.text += seq.detok.add(tok.token_id)
        n_out = seq.num_output
        reason, stop_reason = None, None
        if n_out >= p.min_tokens:
            if not p.ignore_eos and tok.token_id in self.eos_ids:
                reason = "stop"
            elif tok.token_id in p.stop_token_ids:
                reason, stop_reason = "stop", tok.token_id
            elif p.stop_list:
                hit = _find_stop(seq.text, prev_len, p.stop_list)
                if hit is not None:
                    idx, stop = hit
                    seq.text = seq.text[:idx + (len(stop) if p.include_stop_str_in_output else 0)]
                    reason, stop_reason = "stop", stop
        if reason is None and ((p.max_tokens is not None and n_out >= p.max_tokens)
                               or index + 1 >= self.max_seq_len):
            reason = "length"
        if reason is not None:
            del seq.token_ids[index + 1:]  # a placeholder for a token that will not count
            seq.num_pending = 0
            if stop_reason is None or isinstance(stop_reason, int):
                seq.text += seq.detok.flush()
            seq.finish_reason, seq.stop_reason = reason, stop_reason
            self.scheduler.finish(seq)

    def _count_base_tokens(self, req: Request) -> None:
        """What the same text would have cost with the base tokenizer (AdaptiVocab metrics)."""
        n = len(req.seqs)
        self.stats.base_prompt_tokens += n * len(self.patch.to_base_ids(req.prompt_token_ids))
        self.stats.patched_prompt_tokens += n * len(req.prompt_token_ids)
        for seq in req.seqs:
            self.stats.base_generation_tokens += len(self.patch.to_base_ids(seq.output_ids))
            self.stats.patched_generation_tokens += seq.num_output

    # -- introspection -----------------------------------------------------------------------
    def cache_stats(self) -> dict[str, Any]:
        return self.executor.cache_stats()

    def is_alive(self) -> bool:
        """False once a worker died or failed (then every step raises ``WorkerError``);
        cheap and non-blocking, for health checks between steps."""
        return self.executor.is_alive()

    def shutdown(self) -> None:
        self.executor.shutdown()


@dataclass
class LaunchedStep:
    plan: SchedulerStep
    sampled: dict[int, int]  # seq id -> index its sampled token takes in token_ids
    handle: Any = None  # the executor's launch handle, or (without overlap) the StepResult


@dataclass
class EngineStats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    # AdaptiVocab: tokens of finished requests under the patch tokenizer and, for the same
    # text, under the base tokenizer (their difference is what the domain vocabulary saved).
    patched_prompt_tokens: int = 0
    base_prompt_tokens: int = 0
    patched_generation_tokens: int = 0
    base_generation_tokens: int = 0


def _find_stop(text: str, prev_len: int, stops: list[str]) -> tuple[int, str] | None:
    """Earliest stop string that ends in the newly added text."""
    best = None
    for stop in stops:
        idx = text.find(stop, max(0, prev_len - len(stop) + 1))
        if idx != -1 and (best is None or idx < best[0]):
            best = (idx, stop)
    return best
