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


def test_shared_blocks_enter_the_table_and_are_reference_counted():
    c = make(num_blocks=6)
    a = c.alloc_slot()
    c.ensure(a, 12)  # 3 blocks
    prefix = [c.frame_of(a, 0), c.frame_of(a, 1)]
    for block in prefix:
        c.hold(block)
    with pytest.raises(VAttentionError):
        c.hold(prefix[0])  # one hold per frame
    c.free_slot(a)
    assert c.num_free_blocks == 4  # the held prefix stays
    b = c.alloc_slot(prefix)
    c.ensure(b, 16)  # one fresh block past the prefix
    c.commit()
    assert c.block_tables[b, :2].tolist() == prefix
    assert c.block_tables[b, 2].item() not in prefix
    st = c.stats()
    assert st["frames_held"] == 2 and st["frames_shared"] == 2
    assert st["blocks_used"] == 4 and st["virtual_mapped_bytes"] == 4 * c.block_bytes
    for block in prefix:
        c.release(block)  # b still owes them
    with pytest.raises(VAttentionError):
        c.release(prefix[0])
    assert c.num_free_blocks == 2
    c.free_slot(b)
    assert c.num_free_blocks == 6
    with pytest.raises(VAttentionError):
        c.alloc_slot(prefix)  # no longer in use
    with pytest.raises(VAttentionError):
        c.frame_of(b, 0)


def test_shared_entries_of_a_freed_slot_never_reach_the_table():
    c = make()
    a = c.alloc_slot()
    c.ensure(a, 8)
    c.commit()
    frame = c.frame_of(a, 1)
    assert frame != 0  # so that a stray entry would show in the table
    b = c.alloc_slot([frame])
    c.free_slot(b)
    c.commit()
    assert c.block_tables[b].tolist() == [0] * 4
    assert c.num_free_blocks == 6
