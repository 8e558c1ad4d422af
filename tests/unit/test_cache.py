import asyncio
import traceback

import pytest

from serving.cache import AsyncModelCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ModelMissing(LookupError): ...


class Loader:
    """Returns "<key>@v<version>"; the version is read when the load starts, like an alias."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.errors: dict[str, BaseException] = {}
        self.version, self.active, self.max_active = 1, 0, 0

    def hold(self, key: str) -> asyncio.Event:
        self.gates[key] = asyncio.Event()
        return self.gates[key]

    async def __call__(self, key: str) -> str:
        self.calls.append(key)
        version, self.active = self.version, self.active + 1
        self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(0)
        if key in self.gates:
            await self.gates[key].wait()
        self.active -= 1
        if key in self.errors:
            raise self.errors[key]
        return f"{key}@v{version}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loader() -> Loader:
    return Loader()


def make(loader: Loader, clock: FakeClock, **kwargs) -> AsyncModelCache[str]:
    return AsyncModelCache(loader, clock=clock, **kwargs)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_lru_eviction_where_a_hit_refreshes_recency_and_a_peek_does_not(loader, clock):
    evicted = []
    cache = make(loader, clock, capacity=3, on_evict=lambda k, v: evicted.append((k, v)))
    for key in "abc":
        await cache.get(key)
    assert await cache.get("a") == "a@v1"
    before = cache.stats()
    assert cache.peek("b") == "b@v1" and cache.peek("zzz") is None
    assert cache.stats() == before and loader.calls == ["a", "b", "c"]
    await cache.get("d")
    assert cache.keys() == ["c", "a", "d"] and "b" not in cache
    assert evicted == [("b", "b@v1")]
    assert cache.stats().evictions == 1 and len(cache) == 3


async def test_byte_budget_evicts_until_it_holds_and_keeps_no_oversized_value(loader, clock):
    sizes = {"a": 4, "b": 4, "c": 6, "d": 9, "big": 11}
    cache = make(loader, clock, max_bytes=10, size_of=lambda v: sizes[v.split("@")[0]])
    for key in "abc":  # 14 bytes: drop "a" only, 10 fits
        await cache.get(key)
    assert cache.keys() == ["b", "c"] and cache.stats().bytes == 10
    await cache.get("d")
    assert cache.keys() == ["d"] and cache.stats().evictions == 3
    assert await cache.get("big") == "big@v1"  # served, not kept: it would evict all
    assert cache.keys() == ["d"]
    stats = cache.stats()
    assert (stats.evictions, stats.oversized, stats.bytes) == (3, 1, 9)


async def test_entries_expire_ttl_after_their_load_even_when_hit_and_stats_count_it(loader, clock):
    cache = make(loader, clock, ttl_s=100)
    assert cache.stats().hit_rate == 0.0  # no request yet
    await cache.get("a")
    clock.now += 99.9
    assert await cache.get("a") == "a@v1" and loader.calls == ["a"]
    clock.now += 0.2
    assert "a" not in cache and cache.peek("a") is None and cache.keys() == []
    loader.version = 2
    assert await cache.get("a") == "a@v2"
    stats = cache.stats()
    assert loader.calls == ["a", "a"]
    assert (stats.expirations, stats.hits, stats.misses, stats.loads) == (1, 1, 2, 2)
    assert stats.hit_rate == pytest.approx(1 / 3) and stats.size == 1


async def test_single_flight_for_100_concurrent_misses_even_if_a_waiter_leaves(loader, clock):
    cache = make(loader, clock)
    gate = loader.hold("a")
    leaver, *tasks = [asyncio.create_task(cache.get("a")) for _ in range(100)]
    await settle()
    assert loader.calls == ["a"]
    leaver.cancel()  # the first caller leaving must not cancel the load the others share
    await settle()
    gate.set()
    assert await asyncio.gather(*tasks) == ["a@v1"] * 99 and leaver.cancelled()
    assert loader.calls == ["a"] and cache.peek("a") == "a@v1"
    assert cache.stats().loads == 1 and cache.stats().misses == 100


async def test_slow_load_of_one_key_does_not_block_another(loader, clock):
    cache = make(loader, clock)
    gate = loader.hold("a")
    slow = asyncio.create_task(cache.get("a"))
    await settle()
    assert await asyncio.wait_for(cache.get("b"), timeout=5) == "b@v1"
    assert not slow.done()
    gate.set()
    assert await slow == "a@v1"


async def test_failed_load_reaches_every_waiter_and_is_not_cached(loader, clock):
    cache = make(loader, clock)
    gate = loader.hold("a")
    loader.errors["a"] = error = ConnectionError("registry down")
    tasks = [asyncio.create_task(cache.get("a")) for _ in range(10)]
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is error for r in results)
    assert "a" not in cache and cache.stats().load_failures == 1
    del loader.errors["a"]
    assert await cache.get("a") == "a@v1" and loader.calls == ["a", "a"]


async def test_missing_model_is_negative_cached_until_it_expires(loader, clock):
    cache = make(loader, clock, negative_ttl_s=30, is_missing=lambda e: isinstance(e, ModelMissing))
    loader.errors["a"] = ModelMissing("no model for a")
    depths = []
    for _ in range(50):
        with pytest.raises(ModelMissing) as info:
            await cache.get("a")
        depths.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert loader.calls == ["a"] and len(set(depths[1:])) == 1  # traceback does not grow
    assert cache.stats().negative_hits == 49
    clock.now += 30
    with pytest.raises(ModelMissing):
        await cache.get("a")
    assert loader.calls == ["a", "a"]
    assert cache.invalidate("a")  # drops the negative entry
    del loader.errors["a"]
    assert await cache.get("a") == "a@v1"


async def test_invalidate_during_a_load_does_not_reinsert_the_old_value(loader, clock):
    cache = make(loader, clock)
    old_gate = loader.hold("a")
    old = asyncio.create_task(cache.get("a"))
    await settle()
    loader.version = 2  # the new model is registered while the old load is in flight
    cache.invalidate("a")
    new_gate = loader.hold("a")
    new = asyncio.create_task(cache.get("a"))  # must not join the stale load
    await settle()
    old_gate.set()
    assert await old == "a@v1"  # its caller asked before the invalidation
    assert cache.peek("a") is None
    new_gate.set()
    assert await new == "a@v2" and cache.peek("a") == "a@v2"
    assert loader.calls == ["a", "a"]


async def test_refresh_swaps_in_the_new_value_without_a_miss_window(loader, clock):
    evicted = []
    cache = make(loader, clock, on_evict=lambda k, v: evicted.append(v))
    gate = loader.hold("a")
    refresh = asyncio.create_task(cache.refresh("a"))  # uncached: gets join its load
    gets = [asyncio.create_task(cache.get("a")) for _ in range(5)]
    await settle()
    gate.set()
    assert await asyncio.gather(refresh, *gets) == ["a@v1"] * 6 and loader.calls == ["a"]
    loader.version = 2
    gate = loader.hold("a")
    refresh = asyncio.create_task(cache.refresh("a"))
    await settle()
    assert [await cache.get("a") for _ in range(5)] == ["a@v1"] * 5
    gate.set()
    assert await refresh == "a@v2"
    assert await cache.get("a") == "a@v2"
    assert cache.stats().misses == 5 and loader.calls == ["a", "a"]
    assert evicted == ["a@v1"]


async def test_refresh_clears_a_negative_entry_and_supersedes_a_load_in_flight(loader, clock):
    cache = make(loader, clock, is_missing=lambda e: isinstance(e, ModelMissing))
    loader.errors["a"] = ModelMissing("not trained yet")
    with pytest.raises(ModelMissing):
        await cache.get("a")
    del loader.errors["a"]
    gate = loader.hold("a")
    first = asyncio.create_task(cache.refresh("a"))  # training finished
    get = asyncio.create_task(cache.get("a"))  # joins it instead of raising ModelMissing
    await settle()
    loader.version = 2  # retrained while that load may have read the old alias
    second = asyncio.create_task(cache.refresh("a"))
    await settle()
    gate.set()
    assert await asyncio.gather(first, get, second) == ["a@v1", "a@v1", "a@v2"]
    assert cache.peek("a") == "a@v2" and loader.calls == ["a"] * 3


async def test_failed_refresh_keeps_the_old_value_unless_the_model_is_missing(loader, clock):
    cache = make(loader, clock, is_missing=lambda e: isinstance(e, ModelMissing))
    await cache.get("a")
    loader.errors["a"] = ConnectionError("registry down")
    with pytest.raises(ConnectionError):
        await cache.refresh("a")
    assert cache.peek("a") == "a@v1"
    loader.errors["a"] = ModelMissing("model deleted")
    with pytest.raises(ModelMissing):
        await cache.refresh("a")
    assert "a" not in cache
    with pytest.raises(ModelMissing):
        await cache.get("a")
    assert len(loader.calls) == 3


async def test_warm_loads_each_key_once_with_bounded_concurrency(loader, clock):
    cache = make(loader, clock)
    loader.errors["x"] = error = ConnectionError("registry down")
    results = await cache.warm(["a", "b", "c", "a", "x", "d"], concurrency=2)
    assert results == {"a": None, "b": None, "c": None, "x": error, "d": None}
    assert sorted(loader.calls) == ["a", "b", "c", "d", "x"]
    assert loader.max_active == 2
    assert set(cache.keys()) == {"a", "b", "c", "d"}
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.load_failures) == (0, 0, 5, 1)
