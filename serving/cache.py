"""Per-replica async LRU cache of loaded models, with one load per key at a time.

- TTL runs from load time, not last access: a model hit every second is still reloaded
  after `ttl_s`, so a missed change event cannot keep a stale version forever.
- A value larger than `max_bytes` on its own is returned to its callers but not kept;
  keeping it would evict everything else and still break the budget.
- Every load gets a generation from one cache-wide counter. Only the newest load of a key
  may insert, so `invalidate` during a load cannot bring the old value back.
- `refresh` always starts a new load and supersedes one in flight, which may have resolved
  the registry alias before the change. If it fails the old value stays, unless the model
  is reported missing: then the entry goes and the key is negative-cached.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int  # least recently used entries dropped for the count or the byte budget
    expirations: int
    loads: int
    load_failures: int
    negative_hits: int
    oversized: int  # loaded values served but not kept, larger than the whole byte budget
    size: int
    bytes: int
    hit_rate: float  # hits / (hits + misses); negative hits are not model requests


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float
    size: int


@dataclass(slots=True)
class _Negative:
    exc: BaseException
    tb: TracebackType | None  # re-raised with this one, so the traceback does not grow
    expires_at: float


@dataclass(slots=True)
class _Flight(Generic[V]):
    generation: int
    task: asyncio.Task[V]


class AsyncModelCache(Generic[V]):
    """LRU of loaded values; `on_evict(key, value)` runs whenever a kept value leaves
    (evicted, expired, invalidated or replaced by a refresh)."""

    def __init__(
        self,
        loader: Callable[[str], Awaitable[V]],
        *,
        capacity: int = 50,
        ttl_s: float = 7200,
        max_bytes: int | None = None,
        size_of: Callable[[V], int] = lambda v: 0,
        negative_ttl_s: float = 30.0,
        is_missing: Callable[[BaseException], bool] = lambda e: False,
        on_evict: Callable[[str, V], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        budget_ok = max_bytes is None or max_bytes > 0
        if capacity < 1 or ttl_s <= 0 or negative_ttl_s < 0 or not budget_ok:
            raise ValueError("need capacity >= 1, ttl_s > 0, negative_ttl_s >= 0, max_bytes > 0")
        self._loader, self._capacity, self._ttl_s = loader, capacity, ttl_s
        self._max_bytes, self._size_of = max_bytes, size_of
        self._negative_ttl_s, self._is_missing = negative_ttl_s, is_missing
        self._on_evict, self._clock = on_evict, clock
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._negative: dict[str, _Negative] = {}
        self._inflight: dict[str, _Flight[V]] = {}
        self._tasks: set[asyncio.Task[V]] = set()  # strong references to running loads
        self._generations = itertools.count(1)
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._loads = self._load_failures = self._negative_hits = self._oversized = 0

    async def get(self, key: str) -> V:
        return await self._get(key, record=True)

    def peek(self, key: str) -> V | None:
        """The live value or None, without loading, counting or touching recency."""
        entry = self._entries.get(key)
        return entry.value if entry is not None and entry.expires_at > self._clock() else None

    def invalidate(self, key: str) -> bool:
        """Drop the value, the negative entry and the claim of any load in flight."""
        dropped = self._negative.pop(key, None) is not None
        # Waiters of a detached load still get its value; it just may not insert it.
        self._inflight.pop(key, None)
        return self._remove(key) or dropped

    async def refresh(self, key: str) -> V:
        """Load a new value and swap it in; readers keep the old one meanwhile."""
        # The key has a model now (that is why we refresh): gets join this load.
        self._negative.pop(key, None)
        return await asyncio.shield(self._start(key).task)

    async def warm(
        self, keys: Iterable[str], concurrency: int = 4
    ) -> dict[str, BaseException | None]:
        """Load `keys` (outside the hit/miss figures); a failure is reported, not raised."""
        limit = asyncio.Semaphore(concurrency)
        results: dict[str, BaseException | None] = dict.fromkeys(keys)

        async def one(key: str) -> None:
            async with limit:
                try:
                    await self._get(key, record=False)
                except Exception as exc:  # reported per key to the caller
                    results[key] = exc

        await asyncio.gather(*(one(key) for key in results))
        return results

    def keys(self) -> list[str]:
        """Live keys, least recently used first."""
        now = self._clock()
        return [key for key, entry in self._entries.items() if entry.expires_at > now]

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.peek(key) is not None

    def stats(self) -> CacheStats:
        requests = self._hits + self._misses
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            loads=self._loads,
            load_failures=self._load_failures,
            negative_hits=self._negative_hits,
            oversized=self._oversized,
            size=len(self._entries),
            bytes=self._bytes,
            hit_rate=self._hits / requests if requests else 0.0,
        )

    async def _get(self, key: str, *, record: bool) -> V:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at > now:
                self._entries.move_to_end(key)
                self._hits += record
                return entry.value
            self._expirations += self._remove(key)
        negative = self._negative.get(key)
        if negative is not None:
            if negative.expires_at > now:
                self._negative_hits += record
                raise negative.exc.with_traceback(negative.tb)
            del self._negative[key]
        self._misses += record
        flight = self._inflight.get(key) or self._start(key)
        # Shielded: a cancelled caller must not cancel the load the other waiters share.
        return await asyncio.shield(flight.task)

    def _start(self, key: str) -> _Flight[V]:
        generation = next(self._generations)
        task = asyncio.get_running_loop().create_task(self._load(key, generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._inflight[key] = flight = _Flight(generation, task)
        return flight

    def _finish(self, key: str, generation: int) -> bool:
        """Release the key's load slot; true when this load is still the one to keep."""
        flight = self._inflight.get(key)
        if flight is None or flight.generation != generation:
            return False
        del self._inflight[key]
        return True

    async def _load(self, key: str, generation: int) -> V:
        self._loads += 1
        try:
            value = await self._loader(key)
        except BaseException as exc:
            current = self._finish(key, generation)
            if isinstance(exc, Exception):
                self._load_failures += 1
                if current and self._is_missing(exc):
                    self._remove(key)  # the model is gone: drop the kept one too
                    expires_at = self._clock() + self._negative_ttl_s
                    self._negative[key] = _Negative(exc, exc.__traceback__, expires_at)
            raise
        if self._finish(key, generation):
            self._store(key, value)
        return value

    def _store(self, key: str, value: V) -> None:
        now = self._clock()
        self._negative.pop(key, None)
        self._remove(key)
        for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
            self._expirations += self._remove(stale)
        size = self._size_of(value)
        if self._max_bytes is not None and size > self._max_bytes:
            self._oversized += 1
            logger.warning("not caching %s: %d bytes > budget %d", key, size, self._max_bytes)
            return
        self._entries[key] = _Entry(value, now + self._ttl_s, size)
        self._bytes += size
        while len(self._entries) > self._capacity or (
            self._max_bytes is not None and self._bytes > self._max_bytes
        ):
            evicted, entry = self._entries.popitem(last=False)
            self._evictions += 1
            self._drop(evicted, entry)

    def _remove(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._drop(key, entry)
        return entry is not None

    def _drop(self, key: str, entry: _Entry[V]) -> None:  # entry already out of the table
        self._bytes -= entry.size
        if self._on_evict is None:
            return
        try:
            self._on_evict(key, entry.value)
        except Exception:  # a metrics hook must not break the cache for every caller
            logger.exception("on_evict failed for %s", key)
