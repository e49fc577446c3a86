"""The server's garbage-collection policy (sarathi.engine.gc_policy)."""

import gc

from sarathi.engine.gc_policy import SERVING_GEN0_THRESHOLD, tune_for_serving


def test_serving_policy_freezes_start_up_and_collects_the_young_rarely() -> None:
    before = gc.get_threshold()
    try:
        built_at_start = [[i] for i in range(1000)]  # containers the collector tracks
        tune_for_serving()
        assert gc.get_freeze_count() >= len(built_at_start)
        assert gc.get_threshold() == (SERVING_GEN0_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
