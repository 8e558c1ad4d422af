"""What a version's plot shows: its training data, centre, threshold band and flagged points.

The training set is rebuilt the way the pipeline built it (pipelines/window.py) from the
series' files stored before the version was registered, and checked against the version's
`data_sha256` tag: the page says whether the data shown is exactly what the model saw
(files submitted between the fit and the training run, or deleted since, make it differ).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import polars as pl

from core.errors import ModelNotFound
from core.hashing import data_sha256
from core.naming import PRODUCTION_ALIAS, model_name
from core.storage import TrainingDataStore
from pipelines.window import training_window
from training_api.downsample import minmax_buckets, spread
from training_api.registry import ModelRegistry

log = logging.getLogger(__name__)

MAX_MARKED = 5_000  # flagged points drawn; more are thinned evenly (the count is exact)
_STAMP = "%Y%m%dT%H%M%S%fZ"  # how core/storage.py names files: stored time first
_RETRIES = 5  # newest files left out one at a time until the hash matches


class _FilesUpTo:
    """A data store that shows only some of a series' files to `training_window`."""

    def __init__(self, store: TrainingDataStore, sources: list[str]) -> None:
        self.store, self.sources = store, sources

    def scan_series(self, series_id: str) -> pl.LazyFrame:
        return self.store.scan_series(series_id).filter(pl.col("source").is_in(self.sources))


def training_set(store: TrainingDataStore, series_id: str, window_hours: int,
                 registered_ms: int, expected_sha: str | None) -> tuple[pl.DataFrame, bool]:
    """(frame, verified): the version's training set and whether its hash matches."""
    stored = store.scan_series(series_id).select("source").unique().collect()["source"]
    cutoff = datetime.fromtimestamp(registered_ms / 1000, UTC).strftime(_STAMP)
    files = sorted(f for f in stored.to_list() if PurePosixPath(f).name[: len(cutoff)] <= cutoff)
    best = pl.DataFrame(schema={"timestamp": pl.Int64, "value": pl.Float64})
    for attempt in range(min(_RETRIES, len(files))):
        frame = training_window(_FilesUpTo(store, files[: len(files) - attempt]), series_id,
                                window_hours)
        if attempt == 0:
            best = frame
        sha = data_sha256(frame["timestamp"].to_numpy(), frame["value"].to_numpy())
        if sha == expected_sha:
            return frame, True
    return best, False


@dataclass(frozen=True)
class PlotData:
    doc: dict[str, Any]  # what the page's script draws, as JSON


def plot_data(registry: ModelRegistry, store: TrainingDataStore, series_id: str,
              version: int | None, buckets: int) -> PlotData:
    if version is None:
        version = registry.aliases(series_id).get(PRODUCTION_ALIAS)
        if version is None:
            raise ModelNotFound(f"{model_name(series_id)} has no production version; "
                                "ask for one with ?version=", details=[{"series_id": series_id}])
    v = registry.version(series_id, version)
    run = registry.run(v.run_id)
    window = int(float(run.params.get("window_hours", 168)))
    frame, verified = training_set(store, series_id, window, v.created_ms,
                                   v.tags.get("data_sha256"))
    detector = registry.detector(series_id, version)
    ts, values = frame["timestamp"].to_numpy(), frame["value"].to_numpy()
    flagged = np.flatnonzero(detector.predict(values) == 1) if values.size else np.empty(0, int)
    marked = spread(flagged, MAX_MARKED)
    envelope = minmax_buckets(ts, values, buckets)
    low, high = (float(x) for x in detector.expected_range_)
    return PlotData({
        "series_id": series_id,
        "model": model_name(series_id),
        "version": version,
        "aliases": v.aliases,
        "algorithm": v.tags.get("algorithm") or str(detector.algorithm),
        "created_at": datetime.fromtimestamp(v.created_ms / 1000, UTC).isoformat(),
        "points": int(values.size),
        "data_verified": verified,
        "centre": float(detector.center_),
        "band": {"low": low, "high": high},
        "threshold": float(detector.threshold_),
        "envelope": {"t": envelope.timestamps.tolist(), "low": envelope.low.tolist(),
                     "high": envelope.high.tolist()},
        "flagged_total": int(flagged.size),
        "flagged": {"t": ts[marked].tolist(), "v": values[marked].tolist()},
        "metrics": {k: v for k, v in sorted(run.metrics.items()) if math.isfinite(v)},
        "params": run.params,
    })
