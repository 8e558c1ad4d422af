"""The training-data rules, each with its code and a message that says what to fix."""

import numpy as np
import pytest

from core.errors import (
    ConstantSeries,
    InsufficientData,
    InvalidInput,
    InvalidTimestamp,
    NonFiniteValue,
    TooManyPoints,
)
from core.validation import MAX_POINTS, MIN_POINTS, validate_training_data


def series(n: int = MIN_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(1_700_000_000, 1_700_000_000 + 300 * n, 300), rng.normal(size=n)


def test_a_good_series_passes():
    validate_training_data(*series())
    validate_training_data(*series(MAX_POINTS))


def test_unequal_lengths():
    ts, values = series()
    with pytest.raises(InvalidInput, match="10000 timestamps and 9999 values"):
        validate_training_data(ts, values[:-1])


def test_too_few_points_says_how_many_came():
    with pytest.raises(InsufficientData, match="got 9999 points; .* at least 10000") as err:
        validate_training_data(*series(MIN_POINTS - 1))
    assert err.value.details == [{"points": 9999, "min_points": MIN_POINTS}]


def test_too_many_points():
    with pytest.raises(TooManyPoints, match="at most 100000"):
        validate_training_data(*series(MAX_POINTS + 1))


def test_timestamps_out_of_order_name_the_index():
    ts, values = series()
    ts[5000], ts[5001] = ts[5001], ts[5000]
    with pytest.raises(InvalidTimestamp, match=r"timestamps\[5001\] .* goes back from") as err:
        validate_training_data(ts, values)
    assert err.value.details[0]["index"] == 5001


def test_duplicate_timestamp():
    ts, values = series()
    ts[10] = ts[9]
    with pytest.raises(InvalidTimestamp, match=r"timestamps\[10\] = \d+ repeats"):
        validate_training_data(ts, values)


@pytest.mark.parametrize("bad", [0, -5])
def test_timestamps_must_be_positive(bad):
    ts, values = series()
    ts[0] = bad
    with pytest.raises(InvalidTimestamp, match="positive"):
        validate_training_data(ts, values)


def test_float_timestamps_are_refused():
    ts, values = series()
    with pytest.raises(InvalidTimestamp, match="integers"):
        validate_training_data(ts.astype(float), values)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_first_index(bad):
    ts, values = series()
    values[[7, 70]] = bad
    with pytest.raises(NonFiniteValue, match=r"values\[7\]") as err:
        validate_training_data(ts, values)
    assert err.value.details == [{"index": 7, "count": 2}]


def test_constant_series():
    ts, _ = series()
    with pytest.raises(ConstantSeries):
        validate_training_data(ts, np.full(len(ts), 4.2))
    almost = np.full(len(ts), 4.2)
    almost[::2] += 1e-3  # std 5e-4: enough to learn from
    validate_training_data(ts, almost)
