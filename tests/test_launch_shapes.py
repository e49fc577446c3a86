"""The attention kernels' launch shapes (sarathi/model_executor/attention/launch.py): the
plans the graphs are captured with must fit the kernels that run them."""

import pytest

from sarathi.model_executor.attention.launch import (
    MAX_DECODE_SPLITS,
    decode_launch,
    decode_splits,
    prefill_launch,
    prefill_tiles,
)


@pytest.mark.parametrize("batch", [1, 3, 16, 64, 128, 256, 512])
@pytest.mark.parametrize("kv_heads", [1, 2, 8, 32])
def test_decode_splits_fill_the_chip_twice_and_no_more(batch: int, kv_heads: int) -> None:
    sms = 132
    splits = decode_splits(batch, kv_heads, sms)
    assert 1 <= splits <= MAX_DECODE_SPLITS
    programs = batch * kv_heads * splits
    assert programs >= 2 * sms or splits == MAX_DECODE_SPLITS
    assert splits == 1 or batch * kv_heads * (splits - 1) < 2 * sms


def test_decode_launch_shapes_are_what_was_measured() -> None:
    many = decode_launch(256, 8, 4, 132)  # 2,048 programs: 32-key blocks on two warps
    few = decode_launch(64, 8, 4, 132)  # 512 programs
    assert (many.block_n, many.warps, many.stages) == (32, 2, 3)
    assert (few.block_n, few.warps, few.stages) == (64, 4, 2)
    assert many.min_blocks == few.min_blocks == 1
    assert decode_launch(1, 32, 1, 132).min_blocks == 2  # batch 1: two blocks a split at least
    assert decode_launch(1, 8, 4, 132).min_blocks == 1  # unless a block serves a query-head group


@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_prefill_tiles_are_a_power_of_two(head_dim: int) -> None:
    m = prefill_launch(head_dim).block_m
    assert m & (m - 1) == 0


@pytest.mark.parametrize("chunks", [[], [(0, 1)], [(0, 960)], [(1920, 960), (0, 37), (500, 64)],
                                    [(10, 200), (10, 200)]])
def test_prefill_tiles_cover_every_block_once_longest_first(chunks: list[tuple[int, int]]) -> None:
    """Each (chunk, query block) once, ordered by the keys its last query sees, most first
    (ties in chunk order), so that the kernel's last programs are short ones."""
    block_m = 64
    chunk, block = prefill_tiles(chunks, block_m)
    tiles = list(zip(chunk.tolist(), block.tolist(), strict=True))
    want = {(c, b) for c, (_, n) in enumerate(chunks) for b in range(-(-n // block_m))}
    assert sorted(tiles) == sorted(want)
    seen = [chunks[c][0] + (b + 1) * block_m for c, b in tiles]
    assert seen == sorted(seen, reverse=True)
    for i in range(1, len(seen)):
        if seen[i] == seen[i - 1]:
            assert tiles[i - 1] < tiles[i]
