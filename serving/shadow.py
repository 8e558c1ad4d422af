"""Shadow scoring: a series with an open shadow evaluation is scored by the candidate too.

The answer is production's and leaves before the shadow is looked at: the candidate is
scored in a task of its own after the production result exists, and its first load (from
the registry, in a thread) happens in that task, never in the request. Agreement (both
flag a point or neither does) and the scoring time of both are counted per replica and
added to the evaluation's row in the job store every SHADOW_SYNC_S; the same round reads
which series have a shadow. The training API decides on the totals of all replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
from anyio import to_thread

from core.shadows import ShadowCounts, ShadowStore
from serving.loader import LoadedModel
from serving.metrics import ServingMetrics
from serving.scoring import ScoreResult, score_points

log = logging.getLogger(__name__)

MAX_PENDING = 64  # shadow scorings in flight; beyond, requests are not shadowed (counted)
GetModel = Callable[[str, int], Awaitable[LoadedModel]]


class ShadowScorer:
    def __init__(self, store: ShadowStore, get_model: GetModel, metrics: ServingMetrics,
                 sync_s: float) -> None:
        self.store, self.get_model, self.metrics, self.sync_s = store, get_model, metrics, sync_s
        self.active: dict[str, int] = {}  # series_id -> shadow version
        self.pending: dict[tuple[str, int], ShadowCounts] = {}
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()

    def observe(self, series_id: str, production: LoadedModel, values: np.ndarray,
                result: ScoreResult, production_s: float) -> None:
        """Called after production answered a request for `series_id`; returns at once."""
        version = self.active.get(series_id)
        if version is None or version == production.version:
            return
        if len(self._tasks) >= MAX_PENDING:
            self.metrics.shadow_skipped.inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._score(series_id, version, values, result.anomaly, production_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score(self, series_id: str, version: int, values: np.ndarray,
                     production_flags: np.ndarray, production_s: float) -> None:
        try:
            shadow = await self.get_model(series_id, version)
        except Exception as exc:  # a candidate that does not load is not counted
            self.metrics.shadow_errors.inc()
            log.warning("shadow v%d of %s did not load: %s", version, series_id, exc)
            return
        started = time.perf_counter()
        flags = score_points(shadow.model, values).anomaly
        shadow_s = time.perf_counter() - started
        self.record(series_id, version, production_flags, flags, production_s, shadow_s)

    def record(self, series_id: str, version: int, production_flags: np.ndarray,
               shadow_flags: np.ndarray, production_s: float, shadow_s: float) -> None:
        agreements = int(np.count_nonzero(production_flags == shadow_flags))
        counts = self.pending.setdefault((series_id, version), ShadowCounts())
        counts.add(len(shadow_flags), agreements, production_s, shadow_s)
        m = self.metrics
        m.shadow_points.labels(series_id).inc(len(shadow_flags))
        m.shadow_agreements.labels(series_id).inc(agreements)
        m.shadow_seconds.labels("production").observe(production_s)
        m.shadow_seconds.labels("shadow").observe(shadow_s)

    def wake(self) -> None:
        """Sync now (a completion event may have started or ended an evaluation)."""
        self._wake.set()

    async def run(self) -> None:
        """Flush counts and reread the open evaluations, every `sync_s` or when woken."""
        created = False
        while True:
            try:
                if not created:
                    await to_thread.run_sync(self.store.create_schema)
                    created = True
                await self.sync()
            except Exception as exc:  # the job store is down: predictions are unaffected
                log.warning("shadow evaluations unavailable: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.sync_s)
            self._wake.clear()

    async def sync(self) -> None:
        batch, self.pending = self.pending, {}
        try:
            if batch:
                await to_thread.run_sync(self.store.add_counts,
                                         [(s, v, c) for (s, v), c in batch.items()])
            active = await to_thread.run_sync(self.store.open_versions)
        except Exception:
            for key, counts in batch.items():  # keep them for the next round
                self.pending.setdefault(key, ShadowCounts()).merge(counts)
            raise
        for series_id in set(self.active) - set(active):
            for metric in (self.metrics.shadow_points, self.metrics.shadow_agreements):
                with contextlib.suppress(KeyError):
                    metric.remove(series_id)
        self.active = active
        self.metrics.shadow_models.set(len(active))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
