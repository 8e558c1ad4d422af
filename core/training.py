"""Fit one series' detector and gather what MLflow records with it.

mlflow is imported inside `train` only: importing it costs seconds, and processes that
merely import this package (the API) must not pay for it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import polars as pl

from core.contracts import TrainingConfig
from core.detectors import Detector, build_detector

if TYPE_CHECKING:
    from mlflow.models import ModelSignature


INPUT_EXAMPLE_ROWS = 5
_PERCENTILES = {"p01": 1, "p05": 5, "p25": 25, "median": 50, "p75": 75, "p95": 95, "p99": 99}


@dataclass(frozen=True)
class TrainingResult:
    detector: Detector
    metrics: dict[str, float]
    params: dict[str, str | float | int]
    input_example: pd.DataFrame
    signature: ModelSignature


def train(frame: pl.DataFrame, config: TrainingConfig) -> TrainingResult:
    """Fit the configured detector on `frame` (columns `timestamp`, `value`)."""
    from mlflow.models import infer_signature

    missing = {"timestamp", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"training frame lacks columns {sorted(missing)}")
    if frame.height < INPUT_EXAMPLE_ROWS:
        raise ValueError(f"need at least {INPUT_EXAMPLE_ROWS} points, got {frame.height}")
    values = frame["value"].to_numpy().astype(np.float64, copy=False)

    started = time.perf_counter()
    detector = build_detector(config).fit(values)
    training_seconds = time.perf_counter() - started

    metrics = _summary(values) | {
        "anomaly_rate": detector.anomaly_rate_,
        "threshold": float(detector.threshold_),
        "expected_low": float(detector.expected_range_[0]),
        "expected_high": float(detector.expected_range_[1]),
        "training_seconds": training_seconds,
    }
    params: dict[str, str | float | int] = {
        "algorithm": config.algorithm.value,
        "window_hours": config.window_hours,
        **config.hyperparameters,
    }
    # Exactly the wire types serving receives, whatever dtypes polars hands over.
    head = frame.head(INPUT_EXAMPLE_ROWS)
    input_example = pd.DataFrame(
        {
            "timestamp": head["timestamp"].to_numpy().astype(np.int64),
            "value": head["value"].to_numpy().astype(np.float64),
        }
    )
    with warnings.catch_warnings():
        # MLflow hints that int columns cannot hold missing values; timestamps never miss one.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        signature = infer_signature(input_example, detector.predict(input_example))
    return TrainingResult(detector, metrics, params, input_example, signature)


def _summary(values: np.ndarray) -> dict[str, float]:
    # One partition pass for all percentiles instead of one per statistic.
    quantiles = np.percentile(values, list(_PERCENTILES.values()))
    return {
        "points": float(values.size),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    } | {name: float(q) for name, q in zip(_PERCENTILES, quantiles, strict=True)}
