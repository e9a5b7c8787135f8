"""A model of vLLM's automatic prefix caching, to replay a prompt stream and count what it reuses.

What it models (vLLM v1's KV cache manager, as documented in its design notes on automatic
prefix caching):

* the KV cache is split into blocks of ``block_size`` tokens (16); only **full** blocks are
  cached, and a block's hash chains over its own tokens and its parent's hash, so a block is
  reused only when *everything before it* is identical too;
* a request reuses the longest run of leading full blocks already cached; at least one prompt
  token is always computed (a fully cached prompt recomputes its last block's worth), since the
  model needs the last position's logits;
* a finished request's blocks stay cached but become evictable; when a new block is needed and
  the cache (``kv_tokens`` in total) is full, the least recently used evictable block goes, and
  of one request the *tail* blocks go first (vLLM frees a request's blocks in reverse order);
* generated tokens occupy blocks too while a request runs (and are cached when full), but no
  later prompt of Lewin's starts with a reply, so they matter only as space.

Requests are replayed one at a time in the order given (a running batch would hold more blocks
at once: a smaller effective cache). The counts are tokens, not time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass
class CacheStats:
    prompts: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def add(self, prompt_tokens: int, cached: int, output_tokens: int) -> None:
        self.prompts += 1
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached
        self.output_tokens += output_tokens


@dataclass
class PrefixCache:
    """Replay prompts (token id sequences) through the cache; ``stats[tag]`` sums per tag."""

    kv_tokens: int
    block_size: int = 16
    stats: dict[str, CacheStats] = field(default_factory=dict)

    def __post_init__(self):
        if self.block_size < 1 or self.kv_tokens < self.block_size:
            raise ValueError(f"kv_tokens ({self.kv_tokens}) must hold at least one block of {self.block_size}")
        self._capacity = self.kv_tokens // self.block_size
        # chained block identity: (parent block id, this block's tokens) -> block id; an id is
        # cached while it is in _lru (oldest first)
        self._ids: dict[tuple[int, tuple[int, ...]], int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._unique = -1  # ids for blocks no prompt can share (generated tokens, partial blocks)

    def _block_ids(self, tokens: Sequence[int]) -> list[int]:
        ids, parent = [], 0
        for i in range(0, len(tokens) - len(tokens) % self.block_size, self.block_size):
            key = (parent, tuple(tokens[i:i + self.block_size]))
            parent = self._ids.setdefault(key, len(self._ids) + 1)
            ids.append(parent)
        return ids

    def _allocate(self, need: int, pinned: set[int]) -> None:
        """Make room for ``need`` new blocks, evicting the least recently used unpinned ones."""
        while len(self._lru) + need > self._capacity:
            victim = next((b for b in self._lru if b not in pinned), None)
            if victim is None:  # the request alone is bigger than the cache
                return
            del self._lru[victim]

    def request(self, tokens: Sequence[int], output_tokens: int = 0, tag: str = "") -> int:
        """Serve one prompt; returns the prompt tokens read from the cache."""
        blocks = self._block_ids(tokens)
        hit = 0
        while hit < len(blocks) and blocks[hit] in self._lru:
            hit += 1
        # at least the last prompt token is computed
        cached = min(hit * self.block_size, ((len(tokens) - 1) // self.block_size) * self.block_size)
        cached = max(cached, 0)
        reused = blocks[:cached // self.block_size]
        new_prompt = blocks[len(reused):]
        out_blocks = (len(tokens) % self.block_size + output_tokens) // self.block_size
        pinned = set(reused)
        self._allocate(len(new_prompt) + out_blocks, pinned)
        # the request's blocks, freed in reverse order when it finishes: its tail is evicted first
        mine = reused + new_prompt + [self._next_unique() for _ in range(out_blocks)]
        for b in reversed(mine):
            self._lru.pop(b, None)
            if len(self._lru) < self._capacity:
                self._lru[b] = None
        self.stats.setdefault(tag, CacheStats()).add(len(tokens), cached, output_tokens)
        return cached

    def _next_unique(self) -> int:
        self._unique -= 1
        return self._unique

    def total(self, tags: Iterable[str] | None = None) -> CacheStats:
        out = CacheStats()
        for t, s in self.stats.items():
            if tags is None or t in tags:
                out.prompts += s.prompts
                out.prompt_tokens += s.prompt_tokens
                out.cached_tokens += s.cached_tokens
                out.output_tokens += s.output_tokens
        return out
