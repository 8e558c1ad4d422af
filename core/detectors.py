"""Per-series anomaly detectors: scikit-learn estimators the pipeline trains and serving loads.

Every detector takes a DataFrame with a `value` column (others, such as `timestamp`, are
ignored) or a 1-D / single-column array, and answers `predict` with 1 = anomaly, 0 = normal,
which is what MLflow's pyfunc flavour returns. Fitted state is a handful of floats (plus the
trees for the isolation forest), never the training data, so pickles stay small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest
from sklearn.utils.validation import check_is_fitted

from core.contracts import HYPERPARAMETERS, Algorithm, TrainingConfig

# MAD * 1.4826 estimates sigma for gaussian data, so robust thresholds read in sigma units.
MAD_TO_SIGMA = 1.4826
# Mean absolute deviation * sqrt(pi/2) estimates sigma for gaussian data too; used when MAD == 0.
MEAN_AD_TO_SIGMA = math.sqrt(math.pi / 2)
# Types the skops format must be told to trust (MLflow's default sklearn serialisation):
# pass as `skops_trusted_types` to mlflow.sklearn.log_model / save_model.
SKOPS_TRUSTED_TYPES = [
    "core.detectors.StatisticalDetector",
    "core.detectors.RobustDetector",
    "core.detectors.IsolationForestDetector",
    "sklearn.tree._tree.Tree",
]
# Scale of a constant series: tiny but positive, relative to the level, so any change is flagged.
_TINY_RELATIVE_SCALE = 1e-9


def values_of(X: Any) -> np.ndarray:
    """The `value` column of a DataFrame, or a 1-D / single-column array, as finite float64."""
    if hasattr(X, "columns"):
        if "value" not in X.columns:
            raise ValueError(f"expected a 'value' column, got columns {list(X.columns)}")
        X = X["value"]
    values = np.asarray(X, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D array or a single column, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite (no NaN or infinity)")
    return values


def _tiny_scale(center: float) -> float:
    return max(abs(center), 1.0) * _TINY_RELATIVE_SCALE


class Detector(BaseEstimator):
    """Shared API; subclasses set the fitted attributes in `fit` and implement `_score`."""

    algorithm: ClassVar[Algorithm]

    def score_samples(self, X: Any) -> np.ndarray:
        """Anomaly score per point, higher = more anomalous; above `threshold_` is an anomaly."""
        check_is_fitted(self, "threshold_")
        values = values_of(X)
        # sklearn's forest rejects an empty batch; an empty answer is the consistent one.
        return self._score(values) if values.size else np.empty(0)

    def predict(self, X: Any) -> np.ndarray:
        """1 for an anomaly, 0 for a normal point."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)

    def _score(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _finish_fit(self, values: np.ndarray, scores: np.ndarray) -> None:
        self.n_points_ = int(values.size)
        # Kept so the pipeline reads the training anomaly rate without scoring the data again.
        self.anomaly_rate_ = float(np.mean(scores > self.threshold_))


class _ZScoreDetector(Detector):
    """|value - center| / scale, anomalous beyond `threshold_sigma`."""

    def _location_scale(self, values: np.ndarray) -> tuple[float, float]:
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None) -> _ZScoreDetector:
        if not self.threshold_sigma > 0:
            raise ValueError(f"threshold_sigma must be > 0, got {self.threshold_sigma}")
        values = values_of(X)
        if values.size == 0:
            raise ValueError("cannot fit a detector on no points")
        center, scale = self._location_scale(values)
        self.center_ = center
        self.scale_ = scale if scale > 0 else _tiny_scale(center)
        self.threshold_ = float(self.threshold_sigma)
        half_width = self.threshold_ * self.scale_
        self.expected_range_ = (self.center_ - half_width, self.center_ + half_width)
        self._finish_fit(values, self._score(values))
        return self

    def _score(self, values: np.ndarray) -> np.ndarray:
        return np.abs(values - self.center_) / self.scale_


class StatisticalDetector(_ZScoreDetector):
    """Z-score with mean and standard deviation: cheap, but outliers in training inflate std."""

    algorithm = Algorithm.STATISTICAL

    def __init__(self, threshold_sigma: float = 3.0):
        self.threshold_sigma = threshold_sigma

    def _location_scale(self, values: np.ndarray) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values))


class RobustDetector(_ZScoreDetector):
    """Robust z-score with median and MAD (scaled to sigma): training outliers barely move it."""

    algorithm = Algorithm.ROBUST

    def __init__(self, threshold_sigma: float = 3.5):
        self.threshold_sigma = threshold_sigma

    def _location_scale(self, values: np.ndarray) -> tuple[float, float]:
        median = float(np.median(values))
        deviations = np.abs(values - median)
        scale = float(np.median(deviations)) * MAD_TO_SIGMA
        if scale == 0:
            # Over half the points share one value (quantised or stuck sensor): MAD is 0, but
            # the mean absolute deviation still sees the spread of the rest.
            scale = float(np.mean(deviations)) * MEAN_AD_TO_SIGMA
        return median, scale


class IsolationForestDetector(Detector):
    """scikit-learn's IsolationForest on `value`; `contamination` sets the training anomaly share.

    Score = -IsolationForest.score_samples (the paper's anomaly score, in (0, 1]) and
    threshold_ = -offset_, so `predict` agrees with the forest's own -1/1 prediction.
    """

    algorithm = Algorithm.ISOLATION_FOREST

    def __init__(
        self,
        n_estimators: int = 100,
        contamination: float = 0.01,
        max_samples: int = 256,
        random_state: int = 0,
    ):
        self.n_estimators = n_estimators
        self.contamination = contamination
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> IsolationForestDetector:
        values = values_of(X)
        if values.size == 0:
            raise ValueError("cannot fit a detector on no points")
        if not 0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination}")
        # "auto" skips sklearn's own scoring pass; the offset is set below from one pass that
        # also gives the expected range and the training anomaly rate, exactly as sklearn would.
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            contamination="auto",
            max_samples=min(self.max_samples, values.size),  # sklearn warns when larger
            random_state=self.random_state,
        ).fit(values[:, None])
        raw = forest.score_samples(values[:, None])
        forest.offset_ = float(np.percentile(raw, 100.0 * self.contamination))
        forest.contamination = self.contamination
        self.forest_ = forest
        self.threshold_ = -forest.offset_
        inliers = values[-raw <= self.threshold_]
        if inliers.size == 0:  # impossible for contamination <= 0.5; guarded for safety
            inliers = values
        self.center_ = float(np.median(inliers))
        self.expected_range_ = (float(inliers.min()), float(inliers.max()))
        self._finish_fit(values, -raw)
        return self

    def _score(self, values: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(values[:, None])


ESTIMATORS: dict[Algorithm, type[Detector]] = {
    Algorithm.STATISTICAL: StatisticalDetector,
    Algorithm.ROBUST: RobustDetector,
    Algorithm.ISOLATION_FOREST: IsolationForestDetector,
}


def build_detector(config: TrainingConfig) -> Detector:
    """An unfitted detector for the configured algorithm and hyperparameters."""
    return ESTIMATORS[config.algorithm](**config.hyperparameters)


def _gaussian_two_sided_tail(k: float) -> float:
    return math.erfc(k / math.sqrt(2))


def plausible_anomaly_rate(
    algorithm: Algorithm | str, hyperparameters: Mapping[str, Any] | None = None
) -> tuple[float, float]:
    """(low, high) share of training points a healthy model flags, for an asset check.

    Low is 0 everywhere: clean or bounded data can have no point beyond the threshold.
    - statistical: at most 5 % or twice the gaussian tail at k, whichever is larger; beyond
      that the data is far from unimodal and a z-score is the wrong model.
    - robust: at most 10 % or twice the gaussian tail: it is chosen for contaminated or skewed
      data, where the MAD ignores the outliers it then flags (exponential data flags 4 %).
    - isolation forest: the offset is the contamination quantile of the training scores, so
      the rate is contamination by construction; above twice that means ties or a broken fit.
    """
    algorithm = Algorithm(algorithm)
    params = HYPERPARAMETERS[algorithm].model_validate(dict(hyperparameters or {}))
    if algorithm is Algorithm.ISOLATION_FOREST:
        return 0.0, min(1.0, 2 * params.contamination)
    floor = 0.05 if algorithm is Algorithm.STATISTICAL else 0.10
    return 0.0, min(1.0, max(floor, 2 * _gaussian_two_sided_tail(params.threshold_sigma)))
