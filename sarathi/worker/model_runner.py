"""One step on one device: flat batch in, sampled tokens out.

The runner keeps what it must remember between steps for each sequence (its KV slot, its
sampling options and generator, the tokens seen so far for penalties), so the scheduler's
message per step stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import vattention
from sarathi.core.scheduler_output import PENDING_TOKEN, SampledToken, StepInput, StepResult
from sarathi.model_executor.attention import AttentionMetadata
from sarathi.model_executor.layers.rotary import RotaryEmbedding
from sarathi.model_executor.layers.sampler import PendingSample, Sampler, SamplingRow
from sarathi.model_executor.models.llama import ForwardContext
from sarathi.sampling_params import SamplingParams


# Decode tokens before a page boundary at which the next page is hinted for mapping ahead.
AHEAD_TOKENS = 32


@dataclass
class SeqState:
    params: SamplingParams
    prompt_len: int
    generator: torch.Generator | None
    history: list[int]
    slot: int | None = None
    covered: int = 0  # tokens of the slot known to be backed by pages
    # (position, token): a sampled token that reached the host before it was fed back
    resolved: tuple[int, int] | None = None


@dataclass
class Launched:
    sample_ids: list[int]
    pending: PendingSample


@dataclass
class Batch:
    input_ids: torch.Tensor
    meta: AttentionMetadata
    sample_idx: torch.Tensor  # rows of the flat batch whose logits are sampled
    rows: list[SamplingRow]
    sample_ids: list[int]  # seq id of each sampled row


def _tensor(values: list[int], device: torch.device) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        # Pinned staging lets the copy run asynchronously; the caching host allocator keeps
        # the block alive until the copy is done.
        return t.pin_memory().to(device, non_blocking=True)
    return t


class ModelRunner:
    def __init__(self, model: torch.nn.Module, cache: vattention.KVCache, attention: object,
                 sampler: Sampler, max_len: int, device: torch.device) -> None:
        self.model = model
        self.cache = cache
        self.attention = attention
        self.sampler = sampler
        self.device = device
        s = model.shape
        self.rotary = RotaryEmbedding(s.head_dim, s.rope_theta, s.rope_scaling, max_len, device)
        self.states: dict[int, SeqState] = {}
        self.graphs = None  # DecodeGraphs once enable_cuda_graphs() succeeds
        # The last launched step's sampled ids (on the device) and each sequence's row in
        # them: a chunk whose last token is PENDING_TOKEN reads it from here.
        self._last_sampled: torch.Tensor | None = None
        self._last_rows: dict[int, int] = {}
        # The paged cache batches its block-table updates into one copy per step.
        self._commit_tables = getattr(cache, "commit", None)

    def _release(self, seq_id: int, forget: bool) -> None:
        state = self.states.get(seq_id)
        if state is None:
            return
        if state.slot is not None:
            self.cache.free_slot(state.slot)
            state.slot = None
            state.covered = 0
        if forget:
            del self.states[seq_id]

    def execute(self, step: StepInput) -> StepResult:
        return self.collect(self.launch(step))

    @torch.inference_mode()
    def launch(self, step: StepInput) -> "Launched | None":
        """Queue the step's forward and sampling on the device; ``collect`` waits for it.
        Its sampled ids stay on the device, where the next step's pending tokens are read."""
        batch = self.prepare(step)
        if batch is None:
            return None
        logits = self._graph_logits(batch)
        if logits is None:
            ctx = ForwardContext(batch.meta, self.cache, self.attention, self.rotary)
            hidden = self.model(batch.input_ids, ctx)
            if not batch.rows:
                return None
            logits = self.model.compute_logits(hidden[batch.sample_idx])
            if logits is None:  # a tensor-parallel rank other than the sampling one
                return None
        pending = self.sampler.launch(logits, batch.rows)
        self._last_sampled = pending.tokens
        self._last_rows = {seq_id: i for i, seq_id in enumerate(batch.sample_ids)}
        return Launched(batch.sample_ids, pending)

    def collect(self, launched: "Launched | None") -> StepResult:
        if launched is None:
            return StepResult([])
        out = self.sampler.finish(launched.pending)
        sampled = []
        for i, seq_id in enumerate(launched.sample_ids):
            token = out.token_ids[i]
            tok = SampledToken(seq_id, token)
            if out.logprobs is not None and out.logprobs[i] is not None:
                tok.logprob = out.logprobs[i]
                tok.rank = out.ranks[i]
                tok.top = out.top[i]
            sampled.append(tok)
            st = self.states.get(seq_id)
            if st is None:
                continue
            # The token may already be fed back (a pending entry at the end of the history):
            # fill it in; else keep it for the step that feeds it back.
            if st.history and st.history[-1] == PENDING_TOKEN:
                st.history[-1] = token
            else:
                st.resolved = (len(st.history), token)
        return StepResult(sampled)

    def enable_cuda_graphs(self, logits_in_graph: bool = True) -> bool:
        """Replay captured graphs for pure-decode steps where supported; True if enabled.
        Takes one cache slot (and its first unit) for padding rows."""
        from sarathi.worker.cuda_graph import DecodeGraphs, graphs_supported

        if self.graphs is None and graphs_supported(self.model, self.attention, self.device) \
                and self.cache.max_slots > 1:
            self.graphs = DecodeGraphs(self.model, self.cache, self.attention, self.rotary,
                                       self.device, self.cache.max_slots - 1,
                                       logits_in_graph)
        return self.graphs is not None

    def _graph_logits(self, batch: Batch) -> torch.Tensor | None:
        m = batch.meta
        if self.graphs is None or m.prefills or len(batch.rows) != m.num_decodes:
            return None  # graphs cover steps whose every row is a sampled decode
        return self.graphs.run(batch.input_ids, m.positions, m.decode_slots,
                               m.decode_context_lens)

    def prepare(self, step: StepInput) -> "Batch | None":
        """Apply the step's bookkeeping and build the flat batch (None: nothing to run)."""
        for seq_id in step.finished:
            self._release(seq_id, forget=True)
        for seq_id in step.preempted:
            self._release(seq_id, forget=False)
        for new in step.new_sequences:
            gen = None
            if new.seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(new.seed)
            self.states[new.seq_id] = SeqState(new.params, new.prompt_len, gen, [])
        if not step.chunks:
            return None
        # Decode-shaped chunks (one token) first: attention batches them.
        chunks = sorted(step.chunks, key=lambda c: len(c.token_ids) != 1)
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        decode_slots: list[int] = []
        decode_lens: list[int] = []
        prefills: list[tuple[int, int, int]] = []
        fill_idx: list[int] = []  # flat rows whose token is read from the last step's ids
        fill_rows: list[int] = []
        sample_idx: list[int] = []
        rows: list[SamplingRow] = []
        sample_ids: list[int] = []
        tpp = self.cache.tokens_per_page
        for c in chunks:
            st = self.states[c.seq_id]
            if st.slot is None:
                st.slot = self.cache.alloc_slot()
            n = len(c.token_ids)
            end = c.start + n
            if end > st.covered:
                self.cache.ensure(st.slot, end)
                st.covered = -(-end // tpp) * tpp
            elif n == 1 and st.covered - end <= min(AHEAD_TOKENS, tpp - 1):
                # A decode about to cross into its next page: the background thread maps
                # it now, so the ensure() a few steps later finds it resident (repeat hints
                # return at once).
                self.cache.reserve_ahead(st.slot, st.covered + tpp)
            tokens = c.token_ids
            if tokens[-1] == PENDING_TOKEN:
                tokens = self._resolve_pending(c.seq_id, st, end - 1, tokens,
                                               len(input_ids) + n - 1, fill_idx, fill_rows)
            if c.start != len(st.history):
                del st.history[c.start:]
            st.history.extend(tokens)
            input_ids.extend(tokens)
            if n == 1:
                positions.append(c.start)
                slots.append(st.slot)
                decode_slots.append(st.slot)
                decode_lens.append(end)
            else:
                positions.extend(range(c.start, end))
                slots.extend([st.slot] * n)
                prefills.append((st.slot, c.start, n))
            if c.sample:
                sample_idx.append(len(input_ids) - 1)
                rows.append(SamplingRow(st.params, st.history, st.prompt_len, st.generator))
                sample_ids.append(c.seq_id)
        if self._commit_tables is not None:
            self._commit_tables()
        dev = self.device
        meta = AttentionMetadata(
            slot_of_token=_tensor(slots, dev),
            positions=_tensor(positions, dev),
            num_decodes=len(decode_slots),
            decode_slots=_tensor(decode_slots, dev),
            decode_context_lens=_tensor(decode_lens, dev),
            max_decode_context=max(decode_lens, default=0),
            prefills=prefills)
        ids = _tensor(input_ids, dev)
        if fill_idx:
            ids[_tensor(fill_idx, dev)] = self._last_sampled[_tensor(fill_rows, dev)]
        return Batch(ids, meta, _tensor(sample_idx, dev), rows, sample_ids)

    def _resolve_pending(self, seq_id: int, st: SeqState, position: int, tokens: list[int],
                         flat_row: int, fill_idx: list[int], fill_rows: list[int]) -> list[int]:
        """The chunk's last token was sampled by a step whose ids have not reached the host
        when the chunk was scheduled: take it from the host if it has arrived since, else
        copy it on the device from the last step's ids (the history keeps PENDING_TOKEN
        until ``collect`` fills it in)."""
        if st.resolved is not None and st.resolved[0] == position:
            token = st.resolved[1]
            st.resolved = None
            return tokens[:-1] + [token]
        row = self._last_rows.get(seq_id)
        if row is None or self._last_sampled is None:
            raise RuntimeError(f"sequence {seq_id}: its pending token was not sampled by the "
                               "last step")
        fill_idx.append(flat_row)
        fill_rows.append(row)
        return tokens

    def forward_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits of every position of one prompt (no sampling); for tests and evaluation."""
        slot = self.cache.alloc_slot()
        try:
            n = len(token_ids)
            self.cache.ensure(slot, n)
            if self._commit_tables is not None:
                self._commit_tables()
            dev = self.device
            meta = AttentionMetadata(
                slot_of_token=torch.full((n,), slot, dtype=torch.long, device=dev),
                positions=torch.arange(n, device=dev), num_decodes=0,
                decode_slots=torch.empty(0, dtype=torch.long, device=dev),
                decode_context_lens=torch.empty(0, dtype=torch.long, device=dev),
                max_decode_context=0, prefills=[(slot, 0, n)])
            ctx = ForwardContext(meta, self.cache, self.attention, self.rotary)
            with torch.inference_mode():
                hidden = self.model(torch.tensor(token_ids, device=dev), ctx)
                return self.model.compute_logits(hidden)
        finally:
            self.cache.free_slot(slot)
