"""The attention kernels' launch shapes (sarathi/model_executor/attention/launch.py): the
plans the graphs are captured with must fit the kernels that run them."""

import pytest

from sarathi.model_executor.attention.launch import decode_launch, decode_splits, prefill_launch


@pytest.mark.parametrize("batch", [1, 3, 16, 64, 128, 256, 512])
@pytest.mark.parametrize("kv_heads", [1, 2, 8, 32])
@pytest.mark.parametrize("max_len", [1, 63, 600, 8192, 131072])
def test_decode_splits_cover_the_context_in_whole_blocks(
    batch: int, kv_heads: int, max_len: int
) -> None:
    sms = 132
    block_n = decode_launch(batch, kv_heads, sms).block_n
    splits, split_size = decode_splits(batch, kv_heads, max_len, block_n, sms)
    assert 1 <= splits <= 64
    assert split_size % block_n == 0
    assert splits * split_size >= max_len > (splits - 1) * split_size


def test_decode_launch_shapes_are_what_was_measured() -> None:
    many = decode_launch(256, 8, 132)  # 2,048 programs: 32-key blocks on two warps
    few = decode_launch(64, 8, 132)  # 512 programs
    assert (many.block_n, many.warps, many.stages) == (32, 2, 3)
    assert (few.block_n, few.warps, few.stages) == (64, 4, 2)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_prefill_tiles_are_a_power_of_two(head_dim: int) -> None:
    m = prefill_launch(head_dim).block_m
    assert m & (m - 1) == 0
