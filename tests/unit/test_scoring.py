"""Request-path scoring equals the detectors exactly; predict bodies are parsed or refused."""

import numpy as np
import orjson
import pytest

from core.contracts import Algorithm, TrainingConfig
from core.detectors import build_detector
from core.errors import (
    InvalidInput,
    InvalidTimestamp,
    MalformedBody,
    NonFiniteValue,
    PayloadTooLarge,
)
from serving import scoring
from serving.scoring import (
    MAX_POINTS,
    ScoringModel,
    baseline_model,
    baseline_scores,
    parse_predict_body,
    score_points,
)

START = 1_733_000_000


def fitted(algorithm: Algorithm, seed: int, **hyperparameters):
    values = np.random.default_rng(seed).normal(5.0, 0.5, 10_000)
    config = TrainingConfig(algorithm=algorithm, hyperparameters=hyperparameters)
    return build_detector(config).fit(values)


def probe_values(detector, seed: int) -> np.ndarray:
    """Random points around and far from the data, and for a forest its split points exactly."""
    rng = np.random.default_rng(seed + 100)
    values = [rng.normal(5.0, 2.0, 20_000), rng.uniform(-1e6, 1e6, 1_000), [0.0, -0.0, 5.0]]
    if hasattr(detector, "forest_"):
        splits = np.concatenate([e.tree_.threshold for e in detector.forest_.estimators_[:5]])
        values += [splits, np.nextafter(splits, np.inf), np.nextafter(splits, -np.inf)]
    return np.concatenate(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_numpy_scores_equal_the_detector_exactly(algorithm, seed):
    detector = fitted(algorithm, seed)
    model = ScoringModel.from_detector(detector, "model_od_s", 3, "registry")
    values = probe_values(detector, seed)
    result = score_points(model, values)
    assert np.array_equal(result.scores, detector.score_samples(values))
    assert np.array_equal(result.anomaly, detector.predict(values).astype(bool))
    assert model.threshold == detector.threshold_
    assert model.expected_range == tuple(detector.expected_range_)
    assert (model.name, model.version, model.algorithm) == ("model_od_s", 3, algorithm.value)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_forest_table_matches_beyond_float32_range():
    detector = fitted(Algorithm.ISOLATION_FOREST, 0)
    model = ScoringModel.from_detector(detector, "m", 1, "local")
    assert model.steps is not None and model.forest is None  # tabulated, forest not kept
    values = np.array([1e300, -1e300, 3.5e38, -3.5e38, 1e-300])
    assert np.array_equal(model.score(values), detector.score_samples(values))


def test_forest_too_large_to_tabulate_is_scored_by_sklearn(monkeypatch):
    monkeypatch.setattr(scoring, "_MAX_STEPS", 10)
    detector = fitted(Algorithm.ISOLATION_FOREST, 1, n_estimators=20)
    model = ScoringModel.from_detector(detector, "m", 1, "registry")
    assert model.steps is None and model.forest is detector.forest_
    values = probe_values(detector, 1)
    assert np.array_equal(model.score(values), detector.score_samples(values))


def test_confidence_follows_the_source():
    detector = fitted(Algorithm.STATISTICAL, 0)
    values = np.array([5.0, 50.0])
    for source, confidence in [("registry", "high"), ("local", "medium"), ("baseline", "low")]:
        model = ScoringModel.from_detector(detector, "m", 1, source)
        assert score_points(model, values).confidence == confidence
    assert score_points(model, values, source="registry").confidence == "high"
    empty = score_points(model, np.empty(0))
    assert empty.scores.shape == empty.anomaly.shape == (0,)


def test_baseline_flags_injected_spikes_only():
    rng = np.random.default_rng(7)
    values = rng.normal(20.0, 2.0, 2_000)
    spikes = rng.choice(values.size, 15, replace=False)
    values[spikes] += rng.choice([-1, 1], spikes.size) * 20.0  # 10 sigma
    result = baseline_scores(values)
    assert result.confidence == "low"
    assert set(spikes) <= set(np.flatnonzero(result.anomaly))
    assert result.anomaly.sum() <= spikes.size + 3  # a 3.5-sigma rule, a few gaussian tails
    model = baseline_model(values)
    assert (model.source, model.threshold, model.version) == ("baseline", 3.5, None)


def test_baseline_survives_a_zero_mad():
    stuck = np.full(200, 4.0)
    stuck[[10, 20]] = [4.0001, 9.0]  # over half the points equal: MAD is 0
    result = baseline_scores(stuck)
    assert np.isfinite(result.scores).all()
    assert np.flatnonzero(result.anomaly).tolist() == [20]
    constant = baseline_scores(np.full(50, 1.5))
    assert not constant.anomaly.any() and np.isfinite(constant.scores).all()


def columnar(n: int, values=None) -> bytes:
    values = np.linspace(0.0, 1.0, n).tolist() if values is None else values
    return orjson.dumps({"timestamps": [START + 300 * i for i in range(n)], "values": values})


def records(n: int) -> bytes:
    points = [{"timestamp": START + 300 * i, "value": i / 7} for i in range(n)]
    return orjson.dumps({"data": points})


def test_both_batch_forms_and_a_single_point_parse_to_arrays():
    by_columns = parse_predict_body(columnar(5, [1, 2.5, -3.0, 0, 1e-9]))
    assert by_columns.values.dtype == np.float64 and by_columns.timestamps.dtype == np.int64
    assert by_columns.values.tolist() == [1.0, 2.5, -3.0, 0.0, 1e-9]
    assert not by_columns.single and by_columns.columnar
    by_points = parse_predict_body(records(4))
    assert by_points.timestamps.tolist() == [START + 300 * i for i in range(4)]
    assert by_points.values.tolist() == [i / 7 for i in range(4)]
    assert not by_points.single and not by_points.columnar
    single = parse_predict_body(b'{"timestamp": 1733000000, "value": 0.25}')
    assert single.single and single.values.tolist() == [0.25]
    assert single.timestamps.tolist() == [START] and not single.columnar


@pytest.mark.parametrize("body", [columnar, records])
def test_the_point_limit(body):
    assert parse_predict_body(body(MAX_POINTS)).values.size == MAX_POINTS == 32_768
    with pytest.raises(PayloadTooLarge) as caught:
        parse_predict_body(body(MAX_POINTS + 1))
    assert caught.value.details == [{"points": 32_769, "max_points": 32_768}]
    assert caught.value.status == 413


@pytest.mark.parametrize(
    "raw",
    [
        b'{"timestamps": [1, 2], "values": [1.0, NaN]}',
        b'{"timestamps": [1, 2], "values": [Infinity, 1.0]}',
        b'{"timestamps": [1, 2], "values": [1.0, -Infinity]}',
        b'{"timestamps": [1, 2], "values": [1e999, 1.0]}',
        b'{"data": [{"timestamp": 1, "value": 1.0}, {"timestamp": 2, "value": -1e999}]}',
        b'{"timestamp": 1, "value": NaN}',
        b'{"timestamp": 1, "value": 1e999}',
    ],
)
def test_non_finite_values_are_refused(raw):
    with pytest.raises(NonFiniteValue, match="must be finite") as caught:
        parse_predict_body(raw)
    assert caught.value.details[0]["index"] in (0, 1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"timestamps": [1, 2, 3], "values": [1.0, 2.0]}', "same length: got 3 and 2"),
        (b'{"timestamps": [1, 2]}', "a batch is"),
        (b'{"values": [1.0]}', "a batch is"),
        (b'{"data": [{"timestamp": 1, "value": 1}, {"timestamp": 2}]}', "data\\[1\\] must be"),
        (b'{"data": [{"value": 1.0}]}', "data\\[0\\] must be"),
        (b'{"data": [[1, 1.0]]}', "data\\[0\\] must be"),
        (b'{"data": {"timestamp": 1, "value": 1.0}}', '"data" must be an array'),
        (b'{"data": []}', "empty"),
        (b'{"timestamp": 1}', 'exactly "timestamp" and "value"'),
        (b'{"timestamp": 1, "value": 2, "extra": 3}', 'exactly "timestamp" and "value"'),
        (b'{"timestamps": [1, 2], "values": [[1.0], [2.0]]}', "values must be numbers"),
        (b'{"timestamps": [1, 2], "values": [[1.0], 2.0]}', "values must be numbers"),
        (b'{"timestamps": [1, 2], "values": ["1.5", 2.0]}', "values must be numbers"),
        (b'{"timestamps": [1, 2], "values": [null, 2.0]}', "values must be numbers"),
        (b'{"timestamps": [1, 2], "values": [1.0, true]}', "not booleans"),
        (b'{"timestamps": 1, "values": 2}', "must be arrays"),
        (b'{"timestamps": [1], "values": [1.0], "series": "x"}', "a batch is"),
        (b"[1.0, 2.0]", "the body must be one of"),
        (b'{"series": "x"}', "the body must be one of"),
    ],
)
def test_wrong_shapes_and_missing_fields_say_what_to_fix(raw, message):
    with pytest.raises(InvalidInput, match=message):
        parse_predict_body(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"timestamps": [1, 2.5], "values": [1.0, 2.0]}',
        b'{"timestamps": [1, 0], "values": [1.0, 2.0]}',
        b'{"timestamps": [1, true], "values": [1.0, 2.0]}',
        b'{"timestamps": [9223372036854775808], "values": [1.0]}',
        b'{"timestamp": "2026-01-01", "value": 1.0}',
        b'{"timestamp": -5, "value": 1.0}',
    ],
)
def test_timestamps_must_be_positive_integers(raw):
    with pytest.raises((InvalidTimestamp, InvalidInput)) as caught:
        parse_predict_body(raw)
    assert "timestamp" in caught.value.message


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"timestamp": 1} trailing'])
def test_malformed_json(raw):
    with pytest.raises(MalformedBody, match="not valid JSON"):
        parse_predict_body(raw)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000])
def test_deep_nesting_is_a_malformed_body_not_a_crash(raw):
    with pytest.raises(MalformedBody, match="nested too deeply"):
        parse_predict_body(raw)
