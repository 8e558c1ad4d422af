"""The predictor of one replica, independent of Ray: cache → registry (behind the breaker)
→ local copy → baseline; freshness and staleness bookkeeping.

Ray Serve wraps it (deployment.py); the benchmark also runs it under bare uvicorn, so both
measure the same scoring code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from anyio import to_thread

from core.errors import ModelCheckFailed, ModelNotFound, RegistryUnavailable
from core.naming import require_series_id
from core.settings import Settings
from core.shadows import ShadowStore
from serving.breaker import AsyncCircuitBreaker, CircuitOpenError
from serving.cache import AsyncModelCache
from serving.loader import LoadedModel, ModelLoader
from serving.metrics import ServingMetrics
from serving.shadow import ShadowScorer

log = logging.getLogger(__name__)


def cache_key(series_id: str, version: int | None) -> str:
    return series_id if version is None else f"{series_id}@{version}"


def split_key(key: str) -> tuple[str, int | None]:
    series_id, _, version = key.partition("@")
    return series_id, int(version) if version else None


@dataclass
class Latencies:
    """Recent inference latencies, for the p50/p95 in /health."""

    window: deque

    @classmethod
    def keep(cls, n: int = 2048) -> Latencies:
        return cls(deque(maxlen=n))

    def add(self, seconds: float) -> None:
        self.window.append(seconds)

    def percentiles_ms(self) -> dict[str, float | None]:
        if not self.window:
            return {"p50_ms": None, "p95_ms": None}
        p50, p95 = np.percentile(np.fromiter(self.window, float), [50, 95]) * 1000
        return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3)}


class PredictionService:
    def __init__(self, settings: Settings, loader: ModelLoader, metrics: ServingMetrics,
                 shadows: ShadowStore) -> None:
        self.settings = settings
        self.loader = loader
        self.metrics = metrics
        self.started = time.monotonic()
        self.ready = False
        self.latencies = Latencies.keep()
        self.breaker = AsyncCircuitBreaker(
            "registry",
            failure_threshold=settings.breaker_failures,
            reset_timeout_s=settings.breaker_reset_s,
            is_failure=lambda exc: isinstance(exc, RegistryUnavailable | TimeoutError),
            on_state_change=metrics.breaker_changed,
        )
        self.cache: AsyncModelCache[LoadedModel] = AsyncModelCache(
            self._load,
            capacity=settings.cache_capacity,
            ttl_s=settings.cache_ttl_s,
            max_bytes=settings.cache_max_bytes or None,
            size_of=lambda m: m.size_bytes,
            negative_ttl_s=settings.negative_cache_ttl_s,
            is_missing=lambda exc: isinstance(exc, ModelNotFound),
        )
        self.shadow = ShadowScorer(shadows, self.model, metrics, settings.shadow_sync_s)

    # -- loading ------------------------------------------------------------------------

    async def model(self, series_id: str, version: int | None = None) -> LoadedModel:
        return await self.cache.get(cache_key(require_series_id(series_id), version))

    async def _load(self, key: str) -> LoadedModel:
        """Registry first (fails fast while the breaker is open), then the local copy."""
        series_id, version = split_key(key)
        started = time.perf_counter()
        try:
            loaded = await self.breaker.call(self._from_registry, series_id, version)
        except (RegistryUnavailable, CircuitOpenError, TimeoutError, ModelCheckFailed) as exc:
            local = await to_thread.run_sync(self.loader.load_local, series_id, version)
            if local is None:
                raise RegistryUnavailable(
                    f"the model registry is unavailable and no local copy of {key} exists",
                    details=[{"series_id": series_id, "breaker": self.breaker.state}],
                ) from exc
            loaded = local
        self.metrics.load_seconds.labels(loaded.source).observe(time.perf_counter() - started)
        return loaded

    async def _from_registry(self, series_id: str, version: int | None) -> LoadedModel:
        return await asyncio.wait_for(
            to_thread.run_sync(self.loader.load, series_id, version),
            timeout=self.settings.registry_timeout_s,
        )

    # -- freshness ----------------------------------------------------------------------

    async def on_model_changed(self, series_id: str, version: int | None) -> None:
        """A new production version: load it, then swap (no request sees a miss).
        The change may also start or end a shadow evaluation: look at once."""
        self.shadow.wake()
        if series_id in self.cache:
            await self.cache.refresh(series_id)
            log.info("reloaded %s after its completion event (v%s)", series_id, version)
        else:
            self.cache.invalidate(series_id)  # forget a "no model" remembered for it

    async def refresh_local_copies(self) -> None:
        """Models served from local copies go back to the registry once it answers."""
        if self.breaker.state != "closed":
            return
        for key in list(self.cache.keys()):
            model = self.cache.peek(key)
            if model is not None and model.source == "local":
                try:
                    await self.cache.refresh(key)
                except Exception:  # still down: keep serving the copy
                    return

    async def count_stale(self, limit: int = 200) -> int:
        """Cached series whose version differs from the registry's production alias."""
        stale = 0
        for key in list(self.cache.keys())[:limit]:
            series_id, version = split_key(key)
            model = self.cache.peek(key)
            if version is not None or model is None:
                continue
            try:
                production = await self.breaker.call(
                    to_thread.run_sync, self.loader.production_version, series_id)
            except Exception:
                return -1  # unknown while the registry is unreachable
            stale += production is not None and production != model.version
        self.metrics.stale_models.set(stale)
        return stale

    async def warm_up(self) -> None:
        """Load the most recently trained models (from the registry, else local copies)."""
        n = self.settings.warmup_models
        try:
            if n:
                try:
                    series = await self.breaker.call(
                        to_thread.run_sync, self.loader.recent_series, n)
                except Exception:
                    series = await to_thread.run_sync(self.loader.local_series, n)
                failures = await self.cache.warm(series)
                log.info("warmed %d of %d models", sum(v is None for v in failures.values()),
                         len(series))
        finally:
            self.ready = True
