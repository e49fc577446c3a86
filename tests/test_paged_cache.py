"""The paged block-table cache: block accounting and the device table."""

import pytest
import torch

from sarathi.worker.paged_cache import PagedKVCache
from vattention.errors import OutOfPagesError, VAttentionError


def make(num_blocks: int = 8, block_tokens: int = 4, max_slots: int = 3, max_len: int = 16
         ) -> PagedKVCache:
    return PagedKVCache(2, 2, 8, max_slots, max_len, torch.float32, torch.device("cpu"),
                        block_tokens, num_blocks)


def test_blocks_follow_tokens_and_the_table_follows_commit():
    c = make()
    s = c.alloc_slot()
    c.ensure(s, 5)  # 2 blocks of 4
    assert c.num_free_blocks == 6
    assert c.block_tables[s, :2].tolist() == [0, 0]  # not committed yet
    c.commit()
    assert c.block_tables[s, :2].tolist() == [0, 1]
    c.ensure(s, 8)  # still 2 blocks
    assert c.num_free_blocks == 6
    st = c.stats()
    assert st["mapped_bytes"] == 2 * c.block_bytes and st["token_bytes"] == 8 * c.token_bytes


def test_freed_blocks_are_reused_and_pending_entries_dropped():
    c = make()
    a, b = c.alloc_slot(), c.alloc_slot()
    c.ensure(a, 8)
    c.free_slot(a)  # before commit: its entries must not reach the table
    c.ensure(b, 4)
    c.commit()
    assert c.num_free_blocks == 7
    assert c.block_tables[a].tolist() == [0] * 4
    assert c.block_tables[b, 0].item() in (0, 1)


def test_out_of_blocks_and_bad_slots_raise():
    c = make(num_blocks=2)
    s = c.alloc_slot()
    with pytest.raises(OutOfPagesError):
        c.ensure(s, 12)
    with pytest.raises(VAttentionError):
        c.ensure(s, 17)  # past max_len
    with pytest.raises(VAttentionError):
        c.ensure(2, 1)  # not allocated
    c.alloc_slot(), c.alloc_slot()
    with pytest.raises(VAttentionError):
        c.alloc_slot()
