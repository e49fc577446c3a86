"""Garbage collection for a serving process.

Every request gets a snapshot of its output each step (``RequestOutput``), so at batch 256
the engine allocates a few thousand containers a step. CPython's default young-generation
threshold (700 allocations) then collects twice a step, and each collection walks every
live snapshot, token lists included: host time per step that grew with the outputs' length
(``benchmarks/engine_overhead.py --steps 2000 [--serving-gc]``). Collecting rarely, and
never walking what start-up built, keeps that near flat; reference counting still frees
each snapshot as soon as its reader drops it, so the collector only has cycles to find.
"""

from __future__ import annotations

import gc

# Container allocations between young collections (CPython's default: 700).
SERVING_GEN0_THRESHOLD = 20_000


def tune_for_serving() -> None:
    """Move everything built so far (model, tokenizer, engine) out of the collector's
    reach and collect the young generation rarely. Process-wide: called by the server,
    which owns its process, not by the ``LLM`` class, which runs in its caller's."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(SERVING_GEN0_THRESHOLD, gen1, gen2)
