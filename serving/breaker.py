"""Circuit breaker around registry and artifact loads: fail fast while the registry is down.

Choices worth knowing:
- An exception for which `is_failure` is false (e.g. "model not found") is re-raised and
  counts as a success: the registry answered, so it is healthy, and the consecutive
  failure count resets. In half-open such an answer closes the breaker.
- Only results of calls made while closed, and of the half-open trial, move the state.
  A slow call started before the breaker opened neither extends nor ends the open period.
- A cancelled call says nothing about the dependency: it is not counted, and a cancelled
  trial frees the slot, so the breaker stays half-open and the next caller is the trial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpenError(Exception):
    """Raised without calling the protected function; `retry_after_s` is 0 during a trial."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry after {retry_after_s:.1f} s")
        self.name = name
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class BreakerStats:
    state: str
    consecutive_failures: int
    total_failures: int
    opened_count: int
    rejected: int  # calls refused without reaching the dependency
    last_failure: str | None


class AsyncCircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_timeout_s: float = 30.0,
        is_failure: Callable[[BaseException], bool] = lambda e: True,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s < 0:
            raise ValueError("need failure_threshold >= 1 and reset_timeout_s >= 0")
        self.name = name
        self._threshold, self._reset_timeout_s = failure_threshold, reset_timeout_s
        self._is_failure, self._clock, self._on_state_change = is_failure, clock, on_state_change
        self._state = CLOSED
        self._epoch = 0  # bumped on every state change: late results of older calls are ignored
        self._opened_at = 0.0
        self._trial_running = False
        self._consecutive = self._total_failures = self._opened_count = self._rejected = 0
        self._last_failure: str | None = None

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self._reset_timeout_s:
            self._set_state(HALF_OPEN)
        return self._state

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        trial = self._admit()
        epoch = self._epoch
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if self._is_failure(exc):
                self._record_failure(exc, counts=self._epoch == epoch)
            elif self._epoch == epoch:
                self._record_success()
            raise
        finally:
            # Also on cancellation, which says nothing about the dependency and is not counted.
            if trial:
                self._trial_running = False
        if self._epoch == epoch:
            self._record_success()
        return result

    def stats(self) -> BreakerStats:
        return BreakerStats(
            state=self.state,
            consecutive_failures=self._consecutive,
            total_failures=self._total_failures,
            opened_count=self._opened_count,
            rejected=self._rejected,
            last_failure=self._last_failure,
        )

    def _admit(self) -> bool:
        """Let the call through (true if it is the half-open trial) or raise CircuitOpenError."""
        state = self.state
        if state == CLOSED:
            return False
        if state == HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        self._rejected += 1
        remaining = self._opened_at + self._reset_timeout_s - self._clock()
        raise CircuitOpenError(self.name, max(remaining, 0.0) if state == OPEN else 0.0)

    def _record_failure(self, exc: BaseException, *, counts: bool) -> None:
        self._total_failures += 1
        self._last_failure = f"{type(exc).__name__}: {exc}"
        if not counts:
            return
        self._consecutive += 1
        if self._state == HALF_OPEN or self._consecutive >= self._threshold:
            self._opened_at = self._clock()
            self._opened_count += 1
            self._set_state(OPEN)

    def _record_success(self) -> None:
        self._consecutive = 0
        self._set_state(CLOSED)

    def _set_state(self, new: str) -> None:
        old, self._state = self._state, new
        if old == new:
            return
        self._epoch += 1
        logger.info("circuit %s: %s -> %s", self.name, old, new)
        if self._on_state_change is not None:
            try:
                self._on_state_change(self.name, old, new)
            except Exception:  # a metrics hook must not break the protected path
                logger.exception("on_state_change failed for circuit %s", self.name)
