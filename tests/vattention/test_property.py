"""Random sequences of cache operations checked against the dense reference.

Every on-demand backend runs in lockstep with a dense cache of the same shape and budget:
the same slots come out, the same requests run out of pages, the accounting agrees, and
whatever is written through the views reads back identically. Physical residency is
checked against the budget after every step; mapping a page twice raises in the backends
themselves, so it would fail the run.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vattention import KVCache, OutOfPagesError, plan_geometry  # noqa: E402
from vattention.backends import default_page_bytes  # noqa: E402

LAYERS, SLOTS = 2, 4
ACCOUNTING_KEYS = (
    "blocks_total",
    "blocks_used",
    "blocks_free",
    "pages_total",
    "pages_mapped",
    "pages_free",
    "mapped_bytes",
    "token_bytes",
    "slots_used",
)


def make_machine(
    backend: str,
    device: torch.device,
    layout: str,
    dtype: torch.dtype,
    heads: int,
    dim: int,
    max_len: int,
) -> type[RuleBasedStateMachine]:
    HEADS, DIM, MAX_LEN = heads, dim, max_len
    elem = torch.tensor([], dtype=dtype).element_size()
    row = heads * dim * elem * (LAYERS if layout == "mega" else 1)
    page = default_page_bytes(backend, device, row)
    geometry = plan_geometry(LAYERS, heads, dim, dtype, layout, page)
    blocks_per_slot = geometry.blocks_for(max_len)

    class CacheMachine(RuleBasedStateMachine):
        @initialize(budget_units=st.integers(min_value=1, max_value=SLOTS * blocks_per_slot))
        def create(self, budget_units: int) -> None:
            kwargs = dict(
                num_layers=LAYERS,
                num_kv_heads=HEADS,
                head_dim=DIM,
                max_slots=SLOTS,
                max_len=MAX_LEN,
                dtype=dtype,
                device=device,
                layout=layout,
                page_bytes=page,
            )
            budget = budget_units * geometry.block_bytes
            self.cache = KVCache(**kwargs, memory_budget=budget, backend=backend)
            self.ref = KVCache(**kwargs, memory_budget=budget, backend="dense")
            self.live: dict[int, int] = {}  # slot -> tokens covered
            self.written: dict[int, int] = {}  # slot -> tokens written since alloc

        def teardown(self) -> None:
            if hasattr(self, "cache"):
                self.cache.close()
                self.ref.close()

        @precondition(lambda self: len(self.live) < SLOTS)
        @rule()
        def alloc(self) -> None:
            slot = self.cache.alloc_slot()
            assert slot == self.ref.alloc_slot()
            assert slot not in self.live
            self.live[slot] = 0
            self.written[slot] = 0

        @precondition(lambda self: self.live)
        @rule(data=st.data(), tokens=st.integers(min_value=0, max_value=max_len))
        def ensure(self, data: st.DataObject, tokens: int) -> None:
            slot = data.draw(st.sampled_from(sorted(self.live)))
            try:
                self.ref.ensure(slot, tokens)
            except OutOfPagesError:
                with pytest.raises(OutOfPagesError):
                    self.cache.ensure(slot, tokens)
                return
            self.cache.ensure(slot, tokens)
            self.live[slot] = max(self.live[slot], tokens)

        @precondition(lambda self: self.live)
        @rule(data=st.data(), tokens=st.integers(min_value=0, max_value=max_len + 50))
        def ahead(self, data: st.DataObject, tokens: int) -> None:
            slot = data.draw(st.sampled_from(sorted(self.live)))
            self.cache.reserve_ahead(slot, tokens)

        @precondition(lambda self: any(self.live.values()))
        @rule(data=st.data(), seed=st.integers(0, 2**16))
        def write(self, data: st.DataObject, seed: int) -> None:
            slot = data.draw(st.sampled_from([s for s, n in self.live.items() if n]))
            n = self.live[slot]
            start = data.draw(st.integers(0, n - 1))
            end = data.draw(st.integers(start + 1, n))
            gen = torch.Generator().manual_seed(seed)
            for i in range(LAYERS):
                for dst, src in zip(self.cache.layer(i), self.ref.layer(i)):
                    values = torch.randn(end - start, HEADS, DIM, generator=gen).to(dtype)
                    src[slot, start:end] = values.to(src.device)
                    dst[slot, start:end] = values.to(dst.device)
            # Only a prefix written since alloc is defined: earlier owners' data may remain.
            if start <= self.written[slot]:
                self.written[slot] = max(self.written[slot], end)

        @precondition(lambda self: self.live)
        @rule(data=st.data())
        def free(self, data: st.DataObject) -> None:
            slot = data.draw(st.sampled_from(sorted(self.live)))
            self.check_slot(slot)
            self.cache.free_slot(slot)
            self.ref.free_slot(slot)
            del self.live[slot]
            del self.written[slot]

        @rule()
        def reclaim(self) -> None:
            self.cache.wait_ahead()
            self.cache.reclaim()
            stats = self.cache.stats()
            assert stats["cached_blocks"] == 0
            assert stats["resident_blocks"] == stats["blocks_used"] + stats["ahead_blocks"]

        def check_slot(self, slot: int) -> None:
            n = self.written[slot]
            for i in range(LAYERS):
                for got, want in zip(self.cache.layer(i), self.ref.layer(i)):
                    assert torch.equal(got[slot, :n].cpu(), want[slot, :n].cpu())

        @invariant()
        def accounting_matches_reference(self) -> None:
            if not hasattr(self, "cache"):
                return
            got, want = self.cache.stats(), self.ref.stats()
            assert {k: got[k] for k in ACCOUNTING_KEYS} == {k: want[k] for k in ACCOUNTING_KEYS}

        @invariant()
        def residency_within_budget(self) -> None:
            if not hasattr(self, "cache"):
                return
            stats = self.cache.stats()
            assert stats["resident_blocks"] + stats["in_transit_blocks"] <= stats["blocks_total"]
            assert stats["resident_blocks"] >= stats["blocks_used"]
            pager = self.cache._pager
            for slot, tokens in self.live.items():
                assert pager.resident_blocks(slot) >= self.cache.geometry.blocks_for(tokens)

        @invariant()
        def data_reads_back(self) -> None:
            if hasattr(self, "cache"):
                for slot in self.live:
                    self.check_slot(slot)

    return CacheMachine


SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Every step reads the live slots back from the device: fewer, equally long runs.
GPU_SETTINGS = settings(SETTINGS, max_examples=20)


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_cpu_matches_dense(layout: str) -> None:
    machine = make_machine("cpu", torch.device("cpu"), layout, torch.float32, 2, 4, 300)
    run_state_machine_as_test(machine, settings=SETTINGS)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["per_layer", "mega"])
def test_cuda_matches_dense(layout: str, cuda_device: torch.device) -> None:
    # 2 MiB pages: a real head shape so that a slot spans several pages.
    machine = make_machine("cuda", cuda_device, layout, torch.bfloat16, 8, 128, 3000)
    run_state_machine_as_test(machine, settings=GPU_SETTINGS)
