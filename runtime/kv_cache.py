"""KV caches the graph updates in place, and a byte-bounded LRU of them for prefix reuse."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from runtime.config import ModelConfig

logger = logging.getLogger(__name__)


class KVCache:
    """Keys and values of every layer for one token sequence, in fixed-capacity buffers.

    Buffers are [1, kv_heads, capacity + 1, head_dim] OrtValues bound as both the graph's past
    input and its present output, so GroupQueryAttention writes new positions in place (the last
    position is the graph's scratch row, see runtime.convert), of the graph's KV dtype
    (`ModelConfig.kv_dtype`: float32, or float16 for fp16 graphs). `tokens` lists
    what positions 0..length-1 hold; anything past `length` is garbage the graph never reads
    (attention is bounded by `seqlens_k`), which makes truncation free.
    """

    def __init__(self, config: ModelConfig, capacity: int, device: str = "cpu") -> None:
        # One slot more than `capacity`: the graph's attention writes a scratch row there.
        shape = [1, config.num_kv_heads, capacity + 1, config.head_dim]
        self.capacity = capacity
        dtype = config.kv_dtype
        count = 2 * config.num_layers
        # On the CPU the OrtValues wrap these arrays (no copy): `copy_prefix` writes through them.
        self._host: list[np.ndarray] = []
        if device == "cpu":
            self._host = [np.zeros(shape, dtype=dtype) for _ in range(count)]
            buffers = [ort.OrtValue.ortvalue_from_numpy(array) for array in self._host]
        else:
            buffers = [
                ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, 0)
                for _ in range(count)
            ]
        self.keys = buffers[: config.num_layers]
        self.values = buffers[config.num_layers :]
        self.tokens: list[int] = []
        self.nbytes = self.bytes_for(config, capacity)

    @staticmethod
    def bytes_for(config: ModelConfig, capacity: int) -> int:
        """Bytes a cache of `capacity` positions occupies."""
        return config.kv_bytes_per_token() * (capacity + 1)

    @property
    def copyable(self) -> bool:
        """Whether `copy_prefix` can fill this cache (its buffers are in host memory)."""
        return bool(self._host)

    @property
    def length(self) -> int:
        """Number of valid positions."""
        return len(self.tokens)

    def common_prefix(self, tokens: Sequence[int]) -> int:
        """Length of the longest common prefix between the cached tokens and `tokens`."""
        held = self.tokens[:]  # one snapshot: another thread may be generating into it
        limit = min(len(held), len(tokens))
        if limit == 0:
            return 0
        cached = np.asarray(held[:limit])
        mismatch = np.flatnonzero(cached != np.asarray(tokens[:limit]))
        return int(mismatch[0]) if mismatch.size else limit

    def truncate(self, length: int) -> None:
        """Forget positions from `length` on (rejected drafts, an edited suffix)."""
        del self.tokens[length:]

    def copy_prefix(self, source: KVCache, length: int) -> None:
        """Hold `source`'s first `length` positions (both `copyable`), forgetting the rest."""
        for mine, theirs in zip(self._host, source._host, strict=True):
            mine[:, :, :length] = theirs[:, :, :length]  # [1, kv_heads, length, head_dim]
        self.tokens = source.tokens[:length]

    def append(self, tokens: Sequence[int]) -> None:
        """Record that the graph has just written `tokens` after the current length."""
        if self.length + len(tokens) > self.capacity:
            raise ValueError(f"KV cache overflow: {self.length} + {len(tokens)} > {self.capacity}")
        self.tokens.extend(tokens)


class PrefixCache:
    """A byte-bounded LRU of KV caches; a request takes the one sharing its longest prefix.

    Several sequences stay warm at once (say, two files the user switches between); a new
    sequence that shares little with any of them gets a fresh cache while the budget allows,
    else recycles the least recently used one. A sequence that leaves a cached one at least
    `fork_tokens` before its end (the prefix window moved on, a repository piece appended)
    gets the shared prefix copied into another cache, so the cached sequence stays whole: the
    next request may build on it again (`context.prompt.Held`). An ordinary miss leaves less
    (the suffix, the typed line and the answer: ~100-200 tokens with the server's budgets) and
    truncates in place, with no copy.
    """

    def __init__(
        self,
        config: ModelConfig,
        capacity: int,
        max_bytes: int,
        device: str = "cpu",
        min_shared_tokens: int = 64,
        fork_tokens: int = 256,
    ) -> None:
        self.config = config
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.device = device
        self.min_shared_tokens = min_shared_tokens
        self.fork_tokens = fork_tokens
        self._caches: list[KVCache] = []  # least recently used first

    @property
    def nbytes(self) -> int:
        """Bytes held by all caches."""
        return sum(cache.nbytes for cache in self._caches)

    def longest_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of `tokens` some cache holds (a read: nothing moves)."""
        return max((cache.common_prefix(tokens) for cache in self._caches[:]), default=0)

    def acquire(self, tokens: Sequence[int]) -> tuple[KVCache, int]:
        """The cache to run `tokens` in, truncated to the prefix it shares with them."""
        best: KVCache | None = None
        best_shared = 0
        for cache in self._caches:
            shared = cache.common_prefix(tokens)
            if best is None or shared > best_shared:
                best, best_shared = cache, shared
        per_cache = KVCache.bytes_for(self.config, self.capacity)
        room = self.nbytes + per_cache <= self.max_bytes
        # Sharing too little to be worth overwriting another sequence's warm cache.
        unrelated = best_shared < min(self.min_shared_tokens, len(tokens) // 2)
        if best is None or (unrelated and room):
            best, best_shared = KVCache(self.config, self.capacity, self.device), 0
            logger.debug("new KV cache (%d held)", len(self._caches) + 1)
        elif unrelated:
            best = self._caches[0]
            best_shared = best.common_prefix(tokens)
        elif best.length - best_shared >= self.fork_tokens:
            best = self._fork(best, best_shared, room)
        if best in self._caches:
            self._caches.remove(best)
        self._caches.append(best)
        best.truncate(best_shared)
        return best, best_shared

    def _fork(self, source: KVCache, shared: int, room: bool) -> KVCache:
        """A cache holding `source`'s first `shared` positions, `source` left whole: a new one
        while the budget allows, else the least recently used one; `source` itself when that
        is `source` or its buffers cannot be copied."""
        if not source.copyable or (not room and self._caches[0] is source):
            return source
        target = KVCache(self.config, self.capacity, self.device) if room else self._caches[0]
        target.copy_prefix(source, shared)
        logger.debug("KV cache forked at %d of %d tokens", shared, source.length)
        return target
