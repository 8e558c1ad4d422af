"""The training set of a series: its stored points inside the training window.

All of the series' Parquet files are scanned lazily; where submissions overlap, the newer
file wins (file names sort by submission time). The window ends at the newest point and
spans `window_hours`; a window holding fewer points than a model needs is widened to the
newest MIN_POINTS points (at 5-minute sampling a week holds only 2,016 points), and the
set is capped at the newest MAX_POINTS.
"""

from __future__ import annotations

import polars as pl

from core.storage import TrainingDataStore
from core.validation import MAX_POINTS, MIN_POINTS


def training_window(store: TrainingDataStore, series_id: str, window_hours: int) -> pl.DataFrame:
    points = (
        store.scan_series(series_id)
        .sort("source")
        .unique(subset="timestamp", keep="last")
        .select("timestamp", "value")
        .sort("timestamp")
    )
    newest = points.select(pl.col("timestamp").max()).collect().item()
    if newest is None:
        return pl.DataFrame(schema={"timestamp": pl.Int64, "value": pl.Float64})
    in_window = points.filter(pl.col("timestamp") > newest - window_hours * 3600)
    count = in_window.select(pl.len()).collect().item()
    chosen = in_window if count >= MIN_POINTS else points.tail(MIN_POINTS)
    return chosen.tail(MAX_POINTS).collect()
