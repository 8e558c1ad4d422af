"""Training-data rules, vectorised: the API rejects with them and the pipeline re-checks.

Each rule raises its own typed error with a message that says what to fix.
"""

from __future__ import annotations

import numpy as np

from core.errors import (
    ConstantSeries,
    InsufficientData,
    InvalidInput,
    InvalidTimestamp,
    NonFiniteValue,
    TooManyPoints,
)

MIN_POINTS = 10_000
MAX_POINTS = 100_000
MIN_STD = 1e-6


def validate_training_data(timestamps: np.ndarray, values: np.ndarray) -> None:
    """Raise the first broken rule; return None when the series can be trained on."""
    n_ts, n_values = len(timestamps), len(values)
    if n_ts != n_values:
        raise InvalidInput(
            f"timestamps and values must have the same length: got {n_ts} timestamps "
            f"and {n_values} values",
            details=[{"timestamps": n_ts, "values": n_values}],
        )
    if n_ts < MIN_POINTS:
        raise InsufficientData(
            f"got {n_ts} points; a model needs at least {MIN_POINTS}",
            details=[{"points": n_ts, "min_points": MIN_POINTS}],
        )
    if n_ts > MAX_POINTS:
        raise TooManyPoints(
            f"got {n_ts} points; at most {MAX_POINTS} are accepted per fit",
            details=[{"points": n_ts, "max_points": MAX_POINTS}],
        )
    _check_timestamps(np.asarray(timestamps))
    _check_values(np.asarray(values, dtype=np.float64))


def _check_timestamps(ts: np.ndarray) -> None:
    if ts.dtype.kind not in "iu":
        raise InvalidTimestamp("timestamps must be integers (Unix seconds)")
    not_positive = np.flatnonzero(ts <= 0)
    if not_positive.size:
        i = int(not_positive[0])
        raise InvalidTimestamp(
            f"timestamps must be positive Unix seconds: timestamps[{i}] = {int(ts[i])}",
            details=[{"index": i, "timestamp": int(ts[i])}],
        )
    out_of_order = np.flatnonzero(np.diff(ts) <= 0)
    if out_of_order.size:
        i = int(out_of_order[0]) + 1
        kind = "repeats" if ts[i] == ts[i - 1] else "goes back from"
        raise InvalidTimestamp(
            f"timestamps must be strictly increasing: timestamps[{i}] = {int(ts[i])} {kind} "
            f"timestamps[{i - 1}] = {int(ts[i - 1])}",
            details=[{"index": i, "timestamp": int(ts[i]), "previous": int(ts[i - 1])}],
        )


def _check_values(values: np.ndarray) -> None:
    not_finite = np.flatnonzero(~np.isfinite(values))
    if not_finite.size:
        i = int(not_finite[0])
        raise NonFiniteValue(
            f"values must be finite: values[{i}] is {float(values[i])} "
            f"({not_finite.size} non-finite values in all)",
            details=[{"index": i, "count": int(not_finite.size)}],
        )
    with np.errstate(over="ignore"):
        std = float(values.std())
    if not np.isfinite(std):  # e.g. values near 1e308: no model can be fitted on them
        raise NonFiniteValue(
            "values are too large: their standard deviation overflows float64 "
            "(keep them within about ±1e150)",
            details=[{"std": "overflow"}],
        )
    if std <= MIN_STD:
        raise ConstantSeries(
            f"the series is constant (standard deviation {std:.3g} <= {MIN_STD:g}); "
            "a model cannot learn its normal range",
            details=[{"std": std, "min_std": MIN_STD}],
        )
