"""The model of vLLM's prefix cache against block hits computed by hand (block size 4)."""

from __future__ import annotations

import pytest

from lewin.udfs.prefix_cache import PrefixCache


def test_hits_are_whole_chained_blocks_and_at_least_one_token_is_computed():
    c = PrefixCache(kv_tokens=64, block_size=4)
    a = list(range(1, 11))                       # blocks [1-4] [5-8], 2 tokens left over (never cached)
    assert c.request(a, tag="a") == 0
    assert c.request(list(range(1, 9)) + [20, 21, 22, 23, 24], tag="b") == 8   # both full blocks
    assert c.request(list(range(1, 9)), tag="c") == 4        # all 8 cached, but the last token is computed
    assert c.request(a, tag="a") == 8                        # the partial block was never cached
    # the same tokens after a different first block: a block's identity chains over its prefix
    assert c.request([99, 98, 97, 96] + list(range(5, 9)) + [0], tag="d") == 0
    assert c.request([1, 2, 3], tag="e") == 0                # shorter than a block
    st = c.stats["a"]
    assert (st.prompts, st.prompt_tokens, st.cached_tokens, st.computed_tokens) == (2, 20, 8, 12)
    assert c.total().cached_tokens == 8 + 8 + 4
    assert c.total(["b", "c"]).prompts == 2


def test_lru_eviction_under_the_kv_budget_takes_the_oldest_and_a_request_tail_first():
    c = PrefixCache(kv_tokens=16, block_size=4)              # 4 blocks
    c.request([1, 2, 3, 4, 5, 6, 7, 8, 0])                   # X1 X2 cached
    c.request([11, 12, 13, 14, 15, 16, 17, 18, 0])           # Y1 Y2 cached: the cache is full
    # Z needs one block: evicts X's tail block first (the least recently used request, tail first)
    c.request([21, 22, 23, 24, 0])
    assert c.request([1, 2, 3, 4, 5, 6, 7, 8, 0]) == 4       # X1 still there, X2 gone
    # X2's new block evicted Y's tail (X1, being reused, is pinned): only Y1 is left
    assert c.request([11, 12, 13, 14, 15, 16, 17, 18, 0]) == 4
    # a stream longer than the cache, read cyclically, gets nothing (LRU's worst case)
    d = PrefixCache(kv_tokens=16, block_size=4)
    prompts = [[u * 100 + i for i in range(8)] + [0] for u in range(3)]   # 2 blocks each, 6 > 4
    for _ in range(3):
        for p in prompts:
            d.request(p)
    assert d.total().cached_tokens == 0


def test_generated_tokens_take_space_but_are_never_a_prefix():
    c = PrefixCache(kv_tokens=16, block_size=4)
    c.request([1, 2, 3, 4, 0])                               # 1 prompt block
    c.request([5, 6, 7, 8, 0], output_tokens=11)             # 1 prompt block + (1 + 11) // 4 = 3 reply blocks
    assert c.request([1, 2, 3, 4, 0]) == 0                   # evicted to make room for the replies
    assert c.stats[""].output_tokens == 11


def test_a_cache_smaller_than_a_block_is_refused():
    with pytest.raises(ValueError, match="at least one block"):
        PrefixCache(kv_tokens=8, block_size=16)
