"""Down-sampling a series for display: the minimum and maximum of each pixel-wide bucket.

Drawing a line through every bucket's minimum and maximum shows each spike a full-resolution
plot would show (an average per bucket would flatten them), with 2 points per pixel column
instead of up to 100,000 points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Envelope:
    timestamps: np.ndarray  # int64, one per non-empty bucket (its first point's timestamp)
    low: np.ndarray  # float64, the bucket's minimum
    high: np.ndarray  # float64, the bucket's maximum
    counts: np.ndarray  # int64, points in the bucket

    def __len__(self) -> int:
        return len(self.timestamps)


def minmax_buckets(timestamps: np.ndarray, values: np.ndarray, buckets: int) -> Envelope:
    """Split the time range into `buckets` equal spans; keep each non-empty span's min and max.

    `timestamps` must be sorted (training data is strictly increasing). With no more points
    than buckets, every point is its own bucket.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    ts = np.asarray(timestamps, dtype=np.int64)
    vs = np.asarray(values, dtype=np.float64)
    if ts.shape != vs.shape or ts.ndim != 1:
        raise ValueError("timestamps and values must be 1-D arrays of equal length")
    if ts.size <= buckets:
        return Envelope(ts.copy(), vs.copy(), vs.copy(), np.ones(ts.size, dtype=np.int64))
    span = float(ts[-1] - ts[0]) or 1.0
    index = np.minimum(((ts - ts[0]) / span * buckets).astype(np.int64), buckets - 1)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])  # sorted: runs of a bucket
    return Envelope(
        timestamps=ts[starts],
        low=np.minimum.reduceat(vs, starts),
        high=np.maximum.reduceat(vs, starts),
        counts=np.diff(np.r_[starts, ts.size]),
    )


def spread(indices: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `indices`, evenly spaced, first and last kept (for marked points)."""
    if indices.size <= limit:
        return indices
    return indices[np.linspace(0, indices.size - 1, limit).round().astype(np.int64)]
