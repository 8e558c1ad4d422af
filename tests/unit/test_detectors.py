"""Detectors: they flag spikes, stay small and deterministic, and survive an MLflow round trip."""

import pickle
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
import sklearn
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError

from core.contracts import Algorithm, TrainingConfig
from core.detectors import (
    ESTIMATORS,
    SKOPS_TRUSTED_TYPES,
    IsolationForestDetector,
    RobustDetector,
    StatisticalDetector,
    build_detector,
    plausible_anomaly_rate,
)
from core.training import train

MEAN, SIGMA, N_NORMAL, N_SPIKES = 5.0, 0.5, 10_000, 20
ALGORITHMS = list(Algorithm)


def spiky_series(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10,000 gaussian points with 20 spikes at +-10 sigma; returns values and the spike mask."""
    rng = np.random.default_rng(seed)
    values = rng.normal(MEAN, SIGMA, N_NORMAL + N_SPIKES)
    spikes = np.zeros(values.size, dtype=bool)
    spikes[rng.choice(values.size, N_SPIKES, replace=False)] = True
    values[spikes] = MEAN + rng.choice([-10, 10], N_SPIKES) * SIGMA
    return values, spikes


def frame_of(values: np.ndarray) -> pd.DataFrame:
    start = 1_733_000_000
    return pd.DataFrame({"timestamp": start + 300 * np.arange(values.size), "value": values})


def fitted(algorithm: Algorithm, values: np.ndarray, **hyperparameters):
    return build_detector(TrainingConfig(algorithm=algorithm, hyperparameters=hyperparameters)).fit(
        values
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_flags_spikes_and_few_normal_points(algorithm):
    values, spikes = spiky_series()
    detector = fitted(algorithm, values)
    flags = detector.predict(values)
    assert set(np.unique(flags)) <= {0, 1}
    assert flags[spikes].mean() >= 0.95
    low, high = plausible_anomaly_rate(algorithm)
    assert low <= flags.mean() <= high
    assert flags[~spikes].mean() <= high
    assert detector.anomaly_rate_ == pytest.approx(flags.mean())
    assert detector.n_points_ == values.size
    # Every normal training point lies in the expected range; the centre is near the mean.
    lo, hi = detector.expected_range_
    assert lo <= values[flags == 0].min() and values[flags == 0].max() <= hi
    assert abs(detector.center_ - MEAN) < 0.1 * SIGMA
    scores = detector.score_samples(values)
    assert np.array_equal(flags, (scores > detector.threshold_).astype(int))


def test_robust_is_not_dragged_by_outliers_where_statistical_is():
    rng = np.random.default_rng(1)
    clean = rng.normal(MEAN, SIGMA, N_NORMAL)
    dirty = clean.copy()
    dirty[: N_NORMAL // 20] = MEAN + 8 * SIGMA  # 5 % of the points, all on one side

    def width(detector):
        lo, hi = detector.expected_range_
        return hi - lo

    stat_clean, stat_dirty = StatisticalDetector().fit(clean), StatisticalDetector().fit(dirty)
    rob_clean, rob_dirty = RobustDetector().fit(clean), RobustDetector().fit(dirty)
    assert width(stat_dirty) > 1.5 * width(stat_clean)
    assert width(rob_dirty) < 1.15 * width(rob_clean)
    assert abs(rob_dirty.center_ - MEAN) < 0.1 * SIGMA
    assert abs(stat_dirty.center_ - MEAN) > 0.3 * SIGMA
    assert rob_dirty.predict(dirty[: N_NORMAL // 20]).all()


def test_mad_zero_falls_back_to_a_positive_scale_and_still_flags_a_spike():
    rng = np.random.default_rng(2)
    values = np.full(N_NORMAL, 1.0)  # a quantised sensor: 70 % of readings identical
    values[: 3 * N_NORMAL // 10] += rng.normal(0, 0.1, 3 * N_NORMAL // 10)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        detector = RobustDetector().fit(values)
        flags = detector.predict(np.array([1.0, 1.05, 3.0]))
    assert 0 < detector.scale_ < 1
    assert flags.tolist() == [0, 0, 1]


@pytest.mark.parametrize("cls", [StatisticalDetector, RobustDetector])
def test_constant_training_data_does_not_divide_by_zero(cls):
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        detector = cls().fit(np.full(1000, 7.0))
        scores = detector.score_samples(np.array([7.0, 7.5]))
    assert detector.scale_ > 0
    assert np.isfinite(scores).all()
    assert detector.predict(np.array([7.0, 7.5])).tolist() == [0, 1]


@pytest.mark.parametrize("cls", [StatisticalDetector, RobustDetector])
def test_pickles_are_small(cls):
    detector = cls().fit(spiky_series()[0])
    blob = pickle.dumps(detector)
    assert len(blob) < 1024
    restored = pickle.loads(blob)
    values = spiky_series(seed=5)[0]
    assert np.array_equal(restored.predict(values), detector.predict(values))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_predict_accepts_a_dataframe_and_arrays_alike(algorithm):
    values, _ = spiky_series()
    detector = fitted(algorithm, values[:5000])
    expected = detector.predict(values)
    assert expected.dtype == np.int64
    assert np.array_equal(detector.predict(frame_of(values)), expected)
    assert np.array_equal(detector.predict(values[:, None]), expected)
    assert np.array_equal(detector.predict(pl.from_pandas(frame_of(values))), expected)
    assert detector.predict(np.array([])).size == 0
    with pytest.raises(ValueError, match="'value' column"):
        detector.predict(pd.DataFrame({"x": values}))
    with pytest.raises(ValueError, match="single column"):
        detector.predict(np.column_stack([values, values]))
    with pytest.raises(ValueError, match="finite"):
        detector.predict(np.array([1.0, np.nan]))


@pytest.mark.parametrize(
    ("algorithm", "hyperparameters"),
    [
        ("statistical", {"threshold_sigma": 4.0}),
        ("robust", {"threshold_sigma": 5.0}),
        ("isolation_forest", {"n_estimators": 20, "contamination": 0.05, "max_samples": 64}),
    ],
)
def test_build_detector_maps_algorithm_and_hyperparameters(algorithm, hyperparameters):
    config = TrainingConfig(algorithm=algorithm, hyperparameters=hyperparameters)
    detector = build_detector(config)
    assert type(detector) is ESTIMATORS[Algorithm(algorithm)]
    assert detector.algorithm == algorithm
    assert detector.get_params() == config.hyperparameters  # completed with defaults
    assert hyperparameters.items() <= detector.get_params().items()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clone_and_set_params(algorithm):
    detector = fitted(algorithm, spiky_series()[0])
    copy = clone(detector)
    assert copy.get_params() == detector.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(np.array([1.0]))
    key = next(iter(copy.get_params()))
    copy.set_params(**{key: 2 * copy.get_params()[key]})
    assert copy.get_params()[key] == 2 * detector.get_params()[key]


def test_isolation_forest_matches_sklearn_and_is_deterministic():
    values, _ = spiky_series()
    detector = IsolationForestDetector(n_estimators=50, contamination=0.02).fit(values)
    reference = IsolationForest(n_estimators=50, contamination=0.02, random_state=0)
    reference.fit(values[:, None])
    assert detector.threshold_ == pytest.approx(-reference.offset_)
    assert np.array_equal(detector.predict(values), (reference.predict(values[:, None]) == -1))
    assert detector.anomaly_rate_ == pytest.approx(0.02, abs=1e-3)
    again = IsolationForestDetector(n_estimators=50, contamination=0.02).fit(values)
    assert np.array_equal(again.score_samples(values), detector.score_samples(values))
    assert detector.expected_range_[0] < MEAN < detector.expected_range_[1]


def test_plausible_rates_follow_the_hyperparameters():
    assert plausible_anomaly_rate("statistical") == (0.0, 0.05)
    assert plausible_anomaly_rate("robust")[1] == 0.10
    assert plausible_anomaly_rate("statistical", {"threshold_sigma": 1.0})[1] > 0.6
    assert plausible_anomaly_rate("isolation_forest", {"contamination": 0.05}) == (0.0, 0.1)


def training_frame(values: np.ndarray) -> pl.DataFrame:
    start = 1_733_000_000
    return pl.DataFrame(
        {"timestamp": start + 300 * np.arange(values.size), "value": values},
        schema={"timestamp": pl.Int64, "value": pl.Float64},
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_train_returns_metrics_params_and_signature(algorithm):
    values, _ = spiky_series()
    result = train(training_frame(values), TrainingConfig(algorithm=algorithm))
    expected = {"points", "mean", "std", "min", "max", "median", "p01", "p05", "p25", "p75",
                "p95", "p99", "anomaly_rate", "threshold", "expected_low", "expected_high",
                "training_seconds"}  # fmt: skip
    assert set(result.metrics) == expected
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert result.metrics["points"] == values.size
    assert result.metrics["median"] == pytest.approx(np.median(values))
    assert result.metrics["anomaly_rate"] == pytest.approx(result.detector.predict(values).mean())
    assert result.params["algorithm"] == algorithm
    assert result.input_example.dtypes.astype(str).to_dict() == {
        "timestamp": "int64",
        "value": "float64",
    }
    assert len(result.input_example) == 5
    assert result.signature.inputs.input_names() == ["timestamp", "value"]


@pytest.mark.parametrize("serialization_format", ["skops", "cloudpickle"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mlflow_round_trip_predicts_the_same_flags(algorithm, serialization_format, tmp_path):
    import mlflow

    values, _ = spiky_series()
    result = train(training_frame(values), TrainingConfig(algorithm=algorithm))
    path = tmp_path / "model"
    mlflow.sklearn.save_model(
        result.detector,
        str(path),
        signature=result.signature,
        input_example=result.input_example,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],  # skips slow inference
        serialization_format=serialization_format,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,  # ignored by cloudpickle
    )
    frame = frame_of(values)
    flags = np.asarray(mlflow.pyfunc.load_model(str(path)).predict(frame))
    assert np.array_equal(flags, result.detector.predict(frame))
    assert flags.sum() >= N_SPIKES
    restored = mlflow.sklearn.load_model(str(path))
    assert np.array_equal(restored.predict(frame), flags)
