import asyncio

import pytest

from serving.breaker import AsyncCircuitBreaker, CircuitOpenError


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class ModelNotFound(LookupError): ...


class Registry:
    """A protected call that counts its invocations and can be held or made to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def load(self) -> str:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return "model"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def changes() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def breaker(clock, changes) -> AsyncCircuitBreaker:
    return AsyncCircuitBreaker(
        "registry",
        is_failure=lambda e: not isinstance(e, ModelNotFound),
        clock=clock,
        on_state_change=lambda *change: changes.append(change),
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def fail(breaker: AsyncCircuitBreaker, registry: Registry, times: int) -> None:
    registry.error = ConnectionError("registry down")
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(registry.load)
    registry.error = None


async def open_then_wait(breaker, registry, clock) -> None:
    await fail(breaker, registry, 3)
    clock.now += 30
    assert breaker.state == "half_open"


async def test_opens_after_exactly_three_consecutive_failures(breaker, registry, changes):
    await fail(breaker, registry, 2)
    assert breaker.state == "closed" and changes == []
    await fail(breaker, registry, 1)
    assert breaker.state == "open"
    assert changes == [("registry", "closed", "open")]
    stats = breaker.stats()
    assert (stats.consecutive_failures, stats.total_failures, stats.opened_count) == (3, 3, 1)
    assert stats.last_failure == "ConnectionError: registry down"


async def test_open_breaker_fails_fast_without_calling_fn(breaker, registry, clock):
    await fail(breaker, registry, 3)
    clock.now += 10
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(registry.load)
    assert info.value.retry_after_s == pytest.approx(20)
    assert isinstance(info.value, Exception) and info.value.name == "registry"
    assert registry.calls == 3 and breaker.stats().rejected == 1


async def test_half_open_after_the_reset_timeout_on_the_clock(breaker, registry, clock, changes):
    await fail(breaker, registry, 3)
    clock.now += 29.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert changes[-1] == ("registry", "open", "half_open")


async def test_only_one_trial_goes_through_under_concurrency(breaker, registry, clock):
    await open_then_wait(breaker, registry, clock)
    registry.gate = asyncio.Event()
    trial = asyncio.create_task(breaker.call(registry.load))
    await settle()
    others = [asyncio.create_task(breaker.call(registry.load)) for _ in range(20)]
    await settle()
    assert all(t.done() for t in others)  # failed fast, did not queue behind the trial
    errors = [t.exception() for t in others]
    assert all(isinstance(e, CircuitOpenError) and e.retry_after_s == 0.0 for e in errors)
    assert registry.calls == 4  # three failures, then the trial alone
    registry.gate.set()
    assert await trial == "model"


async def test_trial_success_closes_and_resets_the_counter(breaker, registry, clock, changes):
    await open_then_wait(breaker, registry, clock)
    assert await breaker.call(registry.load) == "model"
    assert breaker.state == "closed" and breaker.stats().consecutive_failures == 0
    await fail(breaker, registry, 2)
    assert breaker.state == "closed"
    assert [new for _, _, new in changes] == ["open", "half_open", "closed"]


async def test_trial_failure_reopens_for_another_reset_timeout(breaker, registry, clock):
    await open_then_wait(breaker, registry, clock)
    await fail(breaker, registry, 1)
    assert breaker.state == "open" and breaker.stats().opened_count == 2
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(registry.load)
    assert info.value.retry_after_s == pytest.approx(30)
    clock.now += 29.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"


async def test_success_in_closed_state_resets_the_consecutive_count(breaker, registry):
    for _ in range(3):
        await fail(breaker, registry, 2)
        assert await breaker.call(registry.load) == "model"
    assert breaker.state == "closed"
    stats = breaker.stats()
    assert (stats.consecutive_failures, stats.total_failures, stats.opened_count) == (0, 6, 0)


async def test_non_failures_pass_through_and_count_as_the_registry_answering(
    breaker, registry, clock
):
    registry.error = ModelNotFound("no model_od_x")
    for _ in range(5):
        with pytest.raises(ModelNotFound):
            await breaker.call(registry.load)
    assert breaker.state == "closed" and breaker.stats().total_failures == 0
    await fail(breaker, registry, 2)
    registry.error = ModelNotFound("no model_od_x")
    with pytest.raises(ModelNotFound):
        await breaker.call(registry.load)
    assert breaker.stats().consecutive_failures == 0  # the registry answered
    await fail(breaker, registry, 1)
    clock.now += 30
    registry.error = ModelNotFound("no model_od_x")
    with pytest.raises(ModelNotFound):  # a half-open trial answered "not found": healthy
        await breaker.call(registry.load)
    assert breaker.state == "closed"


async def test_cancelled_trial_frees_the_slot(breaker, registry, clock):
    await open_then_wait(breaker, registry, clock)
    registry.gate = asyncio.Event()
    trial = asyncio.create_task(breaker.call(registry.load))
    await settle()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state == "half_open" and breaker.stats().total_failures == 3
    registry.gate = None
    assert await breaker.call(registry.load) == "model"  # the next caller is the trial
    assert breaker.state == "closed"


async def test_late_results_of_calls_started_before_opening_do_not_move_the_state(
    breaker, registry, clock
):
    gate = asyncio.Event()

    async def slow(fails: bool) -> str:
        await gate.wait()
        if fails:
            raise ConnectionError("timed out")
        return "model"

    late = [asyncio.create_task(breaker.call(slow, fails)) for fails in (False, True)]
    await settle()
    await fail(breaker, registry, 3)
    clock.now += 10
    gate.set()
    results = await asyncio.gather(*late, return_exceptions=True)
    assert results[0] == "model" and isinstance(results[1], ConnectionError)
    assert breaker.state == "open"  # the success did not close it: only the trial may
    stats = breaker.stats()
    assert stats.opened_count == 1 and stats.total_failures == 4
    clock.now += 20  # the late failure did not extend the open period
    assert breaker.state == "half_open"
