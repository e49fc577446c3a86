"""Which heads and vocabulary rows each rank owns (pure arithmetic, no processes)."""

import pytest

from sarathi.model_executor.parallel import head_layout
from sarathi.model_executor.parallel.sharding import vocab_range


def test_kv_heads_split_when_there_are_enough():
    layouts = [head_layout(8, 4, r, 2) for r in range(2)]
    assert [(h.num_heads, h.q_start, h.num_kv_heads, h.kv_start) for h in layouts] == [
        (4, 0, 2, 0),
        (4, 4, 2, 2),
    ]


@pytest.mark.parametrize("heads,kv,tp", [(4, 1, 2), (8, 2, 4), (32, 8, 8), (8, 1, 8)])
def test_replicated_kv_head_serves_exactly_its_query_group(heads, kv, tp):
    group = heads // kv
    for rank in range(tp):
        h = head_layout(heads, kv, rank, tp)
        assert h.num_kv_heads == 1
        owners = {q // group for q in range(h.q_start, h.q_start + h.num_heads)}
        assert owners == {h.kv_start}


@pytest.mark.parametrize(
    "heads,kv,tp,match",
    [(4, 2, 3, "attention heads"), (12, 3, 2, "KV heads"), (12, 3, 4, "multiple of 3")],
)
def test_impossible_splits_say_why(heads, kv, tp, match):
    with pytest.raises(ValueError, match=match):
        head_layout(heads, kv, 0, tp)


def test_vocab_ranges_cover_the_vocabulary_once():
    vocab, tp = 383, 2
    ranges = [vocab_range(vocab, r, tp) for r in range(tp)]
    assert ranges == [(0, 192, 192), (192, 383, 192)]  # the last rank pads one row
    assert sum(end - start for start, end, _ in ranges) == vocab


def test_symmetric_all_reduce_only_where_it_can_run(monkeypatch):
    """One rank, the CPU, disable_custom_all_reduce or SARATHI_SYMM_ALLREDUCE=0: the group
    is returned unchanged (every all-reduce NCCL's)."""
    import torch

    from sarathi.model_executor.parallel import TPGroup

    one = TPGroup()
    assert one.with_symmetric_all_reduce(1024, torch.bfloat16, 64, torch.device("cuda", 0)) is one
    two = TPGroup(0, 2, None)
    assert two.with_symmetric_all_reduce(1024, torch.bfloat16, 64, torch.device("cpu")) is two
    cuda = torch.device("cuda", 0)
    assert two.with_symmetric_all_reduce(1024, torch.bfloat16, 64, cuda, disabled=True) is two
    monkeypatch.setenv("SARATHI_SYMM_ALLREDUCE", "0")
    assert two.with_symmetric_all_reduce(1024, torch.bfloat16, 64, torch.device("cuda", 0)) is two


def _spec(tp: int, executor: str = "mp"):
    from types import SimpleNamespace

    import torch

    parallel = SimpleNamespace(tensor_parallel_size=tp, resolved_executor=executor)
    shape = SimpleNamespace(num_heads=8, num_kv_heads=8, intermediate_size=64)
    return SimpleNamespace(
        config=SimpleNamespace(parallel=parallel), shape=shape, device=torch.device("cpu")
    )


def test_more_ranks_than_cores_warns_once_at_startup(monkeypatch, caplog):
    """tensor_parallel_size past the cores this process may use was taken without a word;
    the ranks then time-share the cores."""
    import logging
    import os

    import sarathi.executor as executor

    assert 1 <= executor.available_cpus() <= (os.cpu_count() or 1)
    monkeypatch.setattr(executor, "available_cpus", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        executor.check_tensor_parallel(_spec(2))
        assert not caplog.records
        executor.check_tensor_parallel(_spec(4))
        executor.check_tensor_parallel(_spec(4, "ray"))  # its ranks may be elsewhere
    (record,) = caplog.records
    assert "tensor_parallel_size 4 exceeds the 2 CPU cores" in record.getMessage()
