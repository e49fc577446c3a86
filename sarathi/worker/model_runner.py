"""One step on one device: the scheduler's step in, sampled tokens out.

    launch(step):
        _update_sequences(step)   # forget finished, release preempted, register new
        batch = _lay_out(step)    # KV slots and blocks for every token; host arrays
        _forward(batch)           # one copy of the inputs; a CUDA graph replay or eager
        sampler.launch(...)       # tokens stay on the device; their copy to the host starts
                              # (with masks_follow: later, in sample(), with grammar masks)
    collect(inflight) -> StepResult

The runner keeps what it must remember between steps for each sequence (its KV slot, its
sampling generator, the tokens seen so far where penalties or bad words need them), so the
scheduler's message per step stays small. Host work per step is array operations over the
batch plus Python only for what changed (new slots, blocks to map, prefill chunks, rare
options). A step with chunks that ask for prompt logprobs runs eagerly and also scores
those chunks' rows (``_forward_scoring_prompts``); every other step is unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sarathi.core.scheduler_output import ScheduledChunk, StepInput, StepResult, TokenMasks
from sarathi.model_executor import kernel_switches
from sarathi.model_executor.attention import AttentionBackend, AttentionMetadata
from sarathi.model_executor.attention.launch import prefill_tiles
from sarathi.model_executor.attention.metadata import ChunkTable, PrefillChunk
from sarathi.model_executor.layers.rotary import RotaryEmbedding
from sarathi.model_executor.layers.sampler import (
    PendingPromptLogprobs,
    PendingSample,
    SampleBatch,
    Sampler,
    SlotOptions,
    SpecialRow,
    allowed_ids,
)
from sarathi.model_executor.models.llama import ForwardContext, LlamaForCausalLM
from sarathi.sampling_params import SamplingParams
from sarathi.sequence import PENDING_TOKEN
from sarathi.worker.cuda_graph import StepGraphs, graphs_supported, resolve_pending
from sarathi.worker.kv_cache import KVCache
from sarathi.worker.step_inputs import Capacity, StepBuffers, load_once

logger = logging.getLogger("sarathi")

# Decode tokens before a block boundary at which the next block is hinted for mapping ahead.
AHEAD_TOKENS = 32
# Prefill chunks a step may have and still replay a graph (more run eagerly).
GRAPH_MAX_CHUNKS = 16


@dataclass
class SeqState:
    params: SamplingParams
    prompt_len: int
    generator: torch.Generator | None
    # Every token fed so far; kept only where sampling reads it (SamplingParams.needs_history).
    history: list[int] | None
    slot: int | None = None
    # The slot it had when it was preempted: a placeholder fed right after the preemption
    # (a recompute) reads the token sampled there.
    prev_slot: int = 0
    # allowed_token_ids' distinct ids (sampler.allowed_ids), made when it is registered.
    allowed: torch.Tensor | None = None


@dataclass
class PromptRows:
    """A chunk's rows that score prompt tokens (prompt logprobs): row ``first_row + i`` of the
    step scores ``targets[i]``, the prompt token at position ``start + i``."""

    seq_id: int
    first_row: int
    start: int
    targets: list[int]
    top: int


@dataclass
class HostBatch:
    """A step laid out on the host: the step buffer's arrays and the facts about them."""

    arrays: dict[str, np.ndarray]
    num_tokens: int
    num_decodes: int
    prefills: list[PrefillChunk]
    longest_chunk: int
    num_tiles: int
    has_pending: bool
    special: list[SpecialRow] = field(default_factory=list)
    prompt_rows: list[PromptRows] = field(default_factory=list)
    views: dict[str, torch.Tensor] = field(default_factory=dict)  # the arrays on the device

    @property
    def num_samples(self) -> int:
        return len(self.arrays["sample_idx"])


@dataclass
class InflightBatch:
    """A launched step: ``collect`` waits for its tokens."""

    pending: PendingSample | None  # None: nothing sampled (or a rank that does not sample)
    # A step launched with ``masks_follow``: its logits (None on a rank that does not
    # sample) and rows, waiting for ``sample``.
    unsampled: tuple[torch.Tensor | None, SampleBatch] | None = None
    prompt: PendingPromptLogprobs | None = None  # where chunks asked for prompt logprobs


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        cache: KVCache,
        attention: AttentionBackend,
        max_len: int,
        max_step_tokens: int,
        device: torch.device,
        eos_ids: set[int],
        seed: int,
    ) -> None:
        self.model = model
        self.cache = cache
        self.attention = attention
        self.device = device
        s = model.shape
        self.rotary = RotaryEmbedding(
            s.head_dim, s.rope_theta, s.rope_scaling, max_len, device, model.kernels
        )
        self.states: dict[int, SeqState] = {}
        # Prefix-cache entries (numbered by the scheduler) -> the frames holding them.
        self.cached_frames: dict[int, int] = {}
        slots = cache.max_slots
        self.covered = np.zeros(slots, dtype=np.int64)  # tokens backed by blocks, per slot
        self.hinted = np.zeros(slots, dtype=np.int64)  # tokens hinted for mapping ahead
        self.tokens_per_block = cache.tokens_per_block
        self.last_token = torch.zeros(slots, dtype=torch.long, device=device)
        self.options = SlotOptions(slots, device)
        self.sampler = Sampler(
            eos_ids, self.options, self.last_token, seed, fused=model.kernels.fused
        )
        self.block_m = attention.prefill_block_m(s.head_dim, next(model.parameters()).dtype)
        tokens = max(max_step_tokens, slots)
        chunks = min(GRAPH_MAX_CHUNKS, tokens)
        self.buffers = StepBuffers(
            Capacity(
                tokens=tokens,
                decodes=min(tokens, slots),
                chunks=chunks,
                tiles=math.ceil(tokens / self.block_m) + chunks,
                samples=min(tokens, slots),
            ),
            device,
        )
        self.max_len = max_len
        self.max_step_tokens = max_step_tokens
        self.graphs: StepGraphs | None = None

    # -- CUDA graphs -------------------------------------------------------------------------
    def capture_graphs(self) -> bool:
        """Capture a graph for every step shape (decode batch sizes up to the slots, token
        counts up to the step budget), behind a progress bar; True if graphs are used.
        Takes one cache slot (and its first block) for padding rows."""
        if self.graphs is not None:
            return True
        if (
            not graphs_supported(self.model, self.attention, self.device)
            or self.cache.max_slots < 2
        ):
            return False
        graphs = self.step_graphs(kernel_switches.num_sms(self.device))
        seconds = graphs.capture_all()
        self.graphs = graphs
        logger.info(
            "captured %d decode and %d mixed-step CUDA graphs in %.1f s",
            len(graphs.decode_buckets),
            len(graphs.token_buckets),
            seconds,
        )
        return True

    def step_graphs(self, num_sms: int) -> StepGraphs:
        """The graphs' forwards over the step buffer, not yet captured: a slot is taken for
        padding rows, and the buffer is padded with it."""
        pad_slot = self.cache.alloc_slot()
        self.cache.ensure(pad_slot, 1)
        self.cache.commit()
        for name in ("slot_of_token", "decode_slots", "sample_slots"):
            self.buffers.pad[name] = pad_slot
        self.buffers.load(_empty_arrays())  # every row padding while capturing
        return StepGraphs(
            self.model,
            self.cache,
            self.attention,
            self.rotary,
            self.buffers,
            self.last_token,
            self.max_len,
            self.cache.max_slots - 1,
            min(self.max_step_tokens, self.buffers.capacity.tokens),
            self.block_m,
            self.device,
            num_sms,
        )

    # -- one step ----------------------------------------------------------------------------
    @torch.inference_mode()
    def launch(self, step: StepInput) -> InflightBatch:
        """Queue the step's forward and sampling on the device; ``collect`` waits for it.
        Its sampled ids stay on the device, where the next step's placeholders are read."""
        batch = self.prepare(step)
        if batch is None:
            return InflightBatch(None)
        if batch.prompt_rows:
            logits, prompt = self._forward_scoring_prompts(batch)
        else:
            logits, prompt = self._forward(batch), None
        sample = SampleBatch(
            batch.views["sample_slots"], batch.arrays["sample_slots"], batch.special
        )
        if step.masks_follow:
            return InflightBatch(None, (logits, sample), prompt)
        sample.masks = step.token_masks
        return InflightBatch(self._sample(logits, sample), prompt=prompt)

    @torch.inference_mode()
    def sample(self, inflight: InflightBatch, masks: TokenMasks | None) -> InflightBatch:
        """Queue the sampling of a step launched with ``masks_follow``."""
        if inflight.unsampled is None:
            return inflight
        logits, sample = inflight.unsampled
        sample.masks = masks
        return InflightBatch(self._sample(logits, sample), prompt=inflight.prompt)

    def _sample(self, logits: torch.Tensor | None, sample: SampleBatch) -> PendingSample | None:
        """Queue the draw where the logits are (``None``: a tensor-parallel rank other than
        the sampling one). Every rank's ``last_token`` receives the ids, rank 0 broadcasting
        them, so every rank resolves the next step's placeholders itself and the driver can
        send step N+1 before step N's tokens reach it."""
        tp = self.model.tp
        rows = len(sample.host_slots)
        if logits is not None:
            pending = self.sampler.launch(logits, sample)
            if tp.world_size > 1 and rows:
                tp.broadcast_from_driver(pending.tokens.to(self.last_token.dtype).contiguous())
            return pending
        if rows:
            ids = torch.empty(rows, dtype=self.last_token.dtype, device=self.device)
            tp.broadcast_from_driver(ids)
            self.last_token.index_copy_(0, sample.slots, ids)
        return None

    def prepare(self, step: StepInput) -> HostBatch | None:
        """All host work of a step before the forward: bookkeeping, slots and KV blocks,
        the step's arrays and their one copy to the device (None: nothing to run)."""
        self._update_sequences(step)
        if not step.has_work:
            return None
        batch = self._lay_out(step)
        batch.views = self._load(batch)
        self.cache.commit()
        self.options.commit()
        return batch

    def collect(self, inflight: InflightBatch) -> StepResult:
        if inflight.pending is None:
            result = StepResult([])
        else:
            result = self.sampler.finish(inflight.pending)
        if inflight.prompt is not None:
            result.prompt_logprobs = inflight.prompt.finish()
        return result

    def execute(self, step: StepInput) -> StepResult:
        return self.collect(self.launch(step))

    @staticmethod
    def wait(inflight: InflightBatch) -> None:
        """Block until the step's sampled ids are on the host. Touches no runner state, so
        one thread may wait here while another launches the next step."""
        if inflight.pending is not None and inflight.pending.done is not None:
            inflight.pending.done.synchronize()

    # -- bookkeeping -------------------------------------------------------------------------
    def _update_sequences(self, step: StepInput) -> None:
        # Entries first: a registered block may belong to a sequence finished in this step.
        for seq_id, block, entry in step.cache_registrations:
            slot = self.states[seq_id].slot
            assert slot is not None, "a block registered after its slot was freed"
            frame = self.cache.frame_of(slot, block)
            self.cache.hold(frame)
            self.cached_frames[entry] = frame
        for entry in step.cache_evictions:
            self.cache.release(self.cached_frames.pop(entry))
        for seq_id in step.finished:
            self._release(seq_id)
            self.states.pop(seq_id, None)
        for seq_id in step.preempted:
            self._release(seq_id)
        # A request's n sequences share their params object: its allowed ids are made once.
        allowed: dict[int, torch.Tensor] = {}
        for new in step.new_sequences:
            gen = None
            if new.seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(new.seed)
            history: list[int] | None = [] if new.params.needs_history else None
            st = SeqState(new.params, new.prompt_len, gen, history)
            if new.params.allowed_token_ids is not None:
                key = id(new.params)
                if key not in allowed:
                    allowed[key] = allowed_ids(new.params.allowed_token_ids)
                st.allowed = allowed[key]
            self.states[new.seq_id] = st

    def _release(self, seq_id: int) -> None:
        st = self.states.get(seq_id)
        if st is None or st.slot is None:
            return
        self.cache.free_slot(st.slot)
        self.covered[st.slot] = 0
        self.hinted[st.slot] = 0
        st.prev_slot, st.slot = st.slot, None

    def _take_slot(self, st: SeqState, entries: Sequence[int]) -> int:
        """A slot for a sequence about to prefill; it starts with the blocks of the prefix
        cache ``entries`` (mapped, not copied)."""
        slot = self.cache.alloc_slot([self.cached_frames[e] for e in entries])
        self.covered[slot] = len(entries) * self.tokens_per_block
        st.slot = slot
        self.options.set(slot, st.params, st.generator is not None)
        return slot

    # -- layout ------------------------------------------------------------------------------
    def _lay_out(self, step: StepInput) -> HostBatch:
        """Slots and KV blocks for every token of the step, and the step's arrays: decodes
        first (one row each, all sampled), then the chunks one after the other."""
        states = self.states
        nd = len(step.decode_seq_ids)
        dstates = [states[i] for i in step.decode_seq_ids]
        dslots = np.fromiter((st.slot for st in dstates), dtype=np.int64, count=nd)
        dpos = np.asarray(step.decode_positions, dtype=np.int64)
        dtok = np.asarray(step.decode_tokens, dtype=np.int64)
        pending = dtok == PENDING_TOKEN
        has_pending = bool(pending.any())
        if has_pending:
            dtok[pending] = -1 - dslots[pending]  # sampled at this slot by the step before
        self._cover_decodes(dslots, dpos + 1)
        for i in np.flatnonzero(self.options.special[dslots]):
            hist = dstates[i].history
            if hist is not None:
                hist.append(int(step.decode_tokens[i]))

        ids, pos, tok_slots = [dtok], [dpos], [dslots]
        prefills: list[PrefillChunk] = []
        sample_rows: list[int] = []
        sample_slots: list[int] = []
        prompt_rows: list[PromptRows] = []
        row = nd
        for c in step.chunks:
            st = states[c.seq_id]
            if st.slot is None:
                slot = self._take_slot(st, step.prefix_hits.get(c.seq_id, ()))
            else:
                slot = st.slot
            n = len(c.token_ids)
            end = c.start + n
            if end > self.covered[slot]:
                self._ensure(slot, end)
            if end < st.prompt_len:
                self._hint(slot, min(st.prompt_len, end + n))  # the next chunk, likely as long
            tokens = self._chunk_tokens(c, st)
            has_pending = has_pending or tokens[-1] < 0
            ids.append(np.asarray(tokens, dtype=np.int64))
            pos.append(np.arange(c.start, end, dtype=np.int64))
            tok_slots.append(np.full(n, slot, dtype=np.int64))
            prefills.append(PrefillChunk(slot, c.start, n))
            if c.prompt_logprobs is not None:
                prompt_rows.append(_prompt_rows(c, row, st.prompt_len, c.prompt_logprobs))
            row += n
            if c.sample:
                sample_rows.append(row - 1)
                sample_slots.append(slot)

        tile_chunk, tile_block = prefill_tiles(
            [(c.start, c.length) for c in prefills], self.block_m
        )
        chunk_off = (
            np.cumsum([nd] + [c.length for c in prefills[:-1]], dtype=np.int64)
            if prefills
            else np.zeros(0, dtype=np.int64)
        )
        pf = np.asarray(prefills, dtype=np.int64).reshape(-1, 3)
        s_slots = np.concatenate([dslots, np.asarray(sample_slots, dtype=np.int64)])
        arrays = {
            "ids": np.concatenate(ids),
            "positions": np.concatenate(pos),
            "slot_of_token": np.concatenate(tok_slots),
            "decode_slots": dslots,
            "decode_lens": dpos + 1,
            "chunk_slot": pf[:, 0],
            "chunk_start": pf[:, 1],
            "chunk_len": pf[:, 2],
            "chunk_off": chunk_off,
            "tile_chunk": tile_chunk,
            "tile_block": tile_block,
            "sample_idx": np.concatenate(
                [np.arange(nd, dtype=np.int64), np.asarray(sample_rows, dtype=np.int64)]
            ),
            "sample_slots": s_slots,
            "decode_count": np.asarray([nd], dtype=np.int64),
        }
        batch = HostBatch(
            arrays,
            row,
            nd,
            prefills,
            int(pf[:, 2].max()) if prefills else 0,
            len(arrays["tile_chunk"]),
            has_pending,
        )
        batch.special = self._special_rows(step, s_slots, dpos)
        batch.prompt_rows = prompt_rows
        return batch

    def _chunk_tokens(self, c: ScheduledChunk, st: SeqState) -> list[int]:
        tokens = c.token_ids
        if tokens[-1] == PENDING_TOKEN:
            # A recompute right after a preemption, fed before its last token reached the
            # host: it was sampled at the slot the sequence had then.
            tokens = [*tokens[:-1], -1 - st.prev_slot]
        if st.history is not None:
            if c.history_head is not None:  # its first tokens came from the prefix cache
                st.history[:] = c.history_head
            elif c.start != len(st.history):
                del st.history[c.start :]
            st.history.extend(tokens)
        return tokens

    def _special_rows(
        self, step: StepInput, s_slots: np.ndarray, dpos: np.ndarray
    ) -> list[SpecialRow]:
        """Rows with a seed or logits they change (penalties, min_tokens, a logit bias,
        allowed token ids, bad words): the sampler treats them one by one."""
        rows = np.flatnonzero(self.options.special[s_slots])
        if not len(rows):
            return []
        nd = len(dpos)
        sampled_chunks = [c for c in step.chunks if c.sample]
        out = []
        for r in rows.tolist():
            if r < nd:
                st = self.states[step.decode_seq_ids[r]]
                index = int(dpos[r]) + 1
            else:
                c = sampled_chunks[r - nd]
                st = self.states[c.seq_id]
                index = c.start + len(c.token_ids)
            p = st.params
            ban = p.min_tokens > 0 and index - st.prompt_len < p.min_tokens
            out.append(SpecialRow(r, p, st.generator, st.history, st.prompt_len, ban, st.allowed))
        return out

    # -- KV blocks ---------------------------------------------------------------------------
    def _ensure(self, slot: int, num_tokens: int) -> None:
        self.cache.ensure(slot, num_tokens)
        tpb = self.tokens_per_block
        self.covered[slot] = -(-num_tokens // tpb) * tpb

    def _hint(self, slot: int, num_tokens: int) -> None:
        """Have the background thread map blocks up to ``num_tokens`` before a later
        ensure() needs them (once per target)."""
        tpb = self.tokens_per_block
        target = -(-num_tokens // tpb) * tpb
        if target > max(self.covered[slot], self.hinted[slot]):
            self.hinted[slot] = target
            self.cache.reserve_ahead(slot, target)

    def _cover_decodes(self, slots: np.ndarray, ends: np.ndarray) -> None:
        covered = self.covered[slots]
        for i in np.flatnonzero(ends > covered):
            self._ensure(int(slots[i]), int(ends[i]))
        # Decodes about to cross into their next block: the background thread maps it now,
        # so the ensure() a few steps later finds it resident. Once per block.
        covered = self.covered[slots]
        ahead = min(AHEAD_TOKENS, self.tokens_per_block - 1)
        near = (covered - ends <= ahead) & (self.hinted[slots] < covered + self.tokens_per_block)
        for i in np.flatnonzero(near):
            self._hint(int(slots[i]), int(covered[i]) + self.tokens_per_block)

    # -- forward -----------------------------------------------------------------------------
    def _shape(self, batch: HostBatch) -> Capacity:
        return Capacity(
            batch.num_tokens,
            batch.num_decodes,
            len(batch.prefills),
            batch.num_tiles,
            batch.num_samples,
        )

    def _load(self, batch: HostBatch) -> dict[str, torch.Tensor]:
        if self.buffers.capacity.fits(self._shape(batch)):
            return self.buffers.load(batch.arrays)
        return load_once(batch.arrays, self.device)

    def _forward(self, batch: HostBatch) -> torch.Tensor | None:
        """Logits of the sampled rows (None on a rank that does not sample): a graph
        replay where one fits the step, else eagerly."""
        g = self.graphs
        if g is not None and self.buffers.capacity.fits(self._shape(batch)):
            if not batch.prefills:
                bucket = g.decode_bucket(batch.num_decodes)
                if bucket is not None:
                    return g.replay_decode(bucket, batch.num_decodes)
            else:
                mixed = g.mixed_shape(
                    batch.num_tokens,
                    batch.num_decodes,
                    len(batch.prefills),
                    batch.num_tiles,
                    batch.num_samples,
                )
                if mixed is not None:
                    hidden = g.replay_mixed(mixed, batch.num_samples)
                    return self.model.compute_logits(hidden, upcast=False)
        hidden = self._run_model(batch)
        return self.model.compute_logits(hidden[batch.views["sample_idx"]], upcast=False)

    def _forward_scoring_prompts(
        self, batch: HostBatch
    ) -> tuple[torch.Tensor | None, PendingPromptLogprobs | None]:
        """Logits of the sampled rows, and the log-probabilities of the rows that score
        prompt tokens (None, None on a rank that does not sample). Always eager: the graphs
        compute the sampled rows' logits only, and steps that score prompts are rare. The
        scoring rows' logits (a chunk's worth at most) fit the activation room the worker
        leaves."""
        hidden = self._run_model(batch)
        logits = self.model.compute_logits(hidden[batch.views["sample_idx"]], upcast=False)
        rows = batch.prompt_rows
        dev = load_once(
            {
                "rows": np.concatenate(
                    [np.arange(r.first_row, r.first_row + len(r.targets)) for r in rows]
                ),
                "targets": np.concatenate([np.asarray(r.targets) for r in rows]),
            },
            self.device,
        )
        # On every rank: the LM head gathers its vocabulary slices collectively.
        scored = self.model.compute_logits(hidden[dev["rows"]])
        if logits is None or scored is None:
            return None, None
        return logits, PendingPromptLogprobs(
            torch.log_softmax(scored, dim=-1),
            dev["targets"],
            np.concatenate([np.full(len(r.targets), r.top, dtype=np.int64) for r in rows]),
            [(r.seq_id, r.start, len(r.targets)) for r in rows],
        )

    def _run_model(self, batch: HostBatch) -> torch.Tensor:
        """The model over every row of the step, eagerly: hidden states [tokens, hidden]."""
        a, views = batch.arrays, batch.views
        chunks = None
        if batch.prefills:
            chunks = ChunkTable(
                views["chunk_slot"],
                views["chunk_start"],
                views["chunk_len"],
                views["chunk_off"],
                batch.longest_chunk,
            )
        nd = batch.num_decodes
        meta = AttentionMetadata(
            slot_of_token=views["slot_of_token"],
            positions=views["positions"],
            num_decodes=nd,
            decode_slots=views["decode_slots"],
            decode_context_lens=views["decode_lens"],
            max_decode_context=int(a["decode_lens"].max()) if nd else 0,
            prefills=batch.prefills,
            chunks=chunks,
        )
        ids = views["ids"]
        if batch.has_pending:
            ids = resolve_pending(ids, self.last_token)
        return self.model(ids, ForwardContext(meta, self.cache, self.attention, self.rotary))

    def forward_logits(self, token_ids: list[int]) -> torch.Tensor | None:
        """Logits of every position of one prompt (no sampling); for tests and evaluation.
        None on a tensor-parallel rank other than the sampling one."""
        from sarathi.model_executor.attention.metadata import chunk_table

        slot = self.cache.alloc_slot()
        try:
            n = len(token_ids)
            self.cache.ensure(slot, n)
            self.cache.commit()
            dev = self.device
            empty = torch.empty(0, dtype=torch.long, device=dev)
            meta = AttentionMetadata(
                slot_of_token=torch.full((n,), slot, dtype=torch.long, device=dev),
                positions=torch.arange(n, device=dev),
                num_decodes=0,
                decode_slots=empty,
                decode_context_lens=empty,
                max_decode_context=0,
                prefills=[PrefillChunk(slot, 0, n)],
                chunks=chunk_table([PrefillChunk(slot, 0, n)], 0, dev),
            )
            ctx = ForwardContext(meta, self.cache, self.attention, self.rotary)
            with torch.inference_mode():
                hidden = self.model(torch.tensor(token_ids, device=dev), ctx)
                return self.model.compute_logits(hidden)
        finally:
            self.cache.free_slot(slot)


def _prompt_rows(c: ScheduledChunk, first_row: int, prompt_len: int, top: int) -> PromptRows:
    """The chunk's rows before the prompt's last token: each scores the prompt token after
    it (for the chunk's last row, the next chunk's first token); the prompt's last row
    samples instead."""
    after = c.token_ids[1:]
    if c.next_prompt_token is not None:
        after.append(c.next_prompt_token)
    rows = min(c.start + len(c.token_ids), prompt_len - 1) - c.start
    return PromptRows(c.seq_id, first_row, c.start + 1, after[:rows], top)


def _empty_arrays() -> dict[str, np.ndarray]:
    from sarathi.worker.step_inputs import FIELDS

    return {name: np.zeros(0, dtype=np.int64) for name in FIELDS}
