import numpy as np
import pytest

from training_api.downsample import minmax_buckets, spread


def test_each_bucket_keeps_its_min_and_max_so_spikes_survive():
    ts = np.arange(100_000, dtype=np.int64) * 300
    values = np.zeros(100_000)
    values[12_345], values[67_890] = 9.0, -7.0  # one-point spikes
    env = minmax_buckets(ts, values, 1000)
    assert len(env) == 1000  # regular sampling: every bucket holds points
    assert env.counts.sum() == 100_000
    assert env.high.max() == 9.0 and env.low.min() == -7.0
    spike = np.flatnonzero(env.high == 9.0)
    assert spike.size == 1 and env.timestamps[spike[0]] <= ts[12_345]
    assert np.all(np.diff(env.timestamps) > 0)


def test_matches_a_plain_loop_over_buckets():
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.integers(1, 900, 5_000)).astype(np.int64)  # irregular, with gaps
    values = rng.standard_normal(5_000)
    env = minmax_buckets(ts, values, 300)
    span = ts[-1] - ts[0]
    index = np.minimum(((ts - ts[0]) / span * 300).astype(int), 299)
    expected = [(values[index == b].min(), values[index == b].max())
                for b in range(300) if (index == b).any()]
    assert list(zip(env.low, env.high, strict=True)) == expected
    assert len(env) == len(expected) <= 300


def test_few_points_are_kept_as_they_are():
    ts, values = np.array([10, 20, 30]), np.array([1.0, 3.0, 2.0])
    env = minmax_buckets(ts, values, 100)
    assert env.timestamps.tolist() == [10, 20, 30]
    assert env.low.tolist() == env.high.tolist() == [1.0, 3.0, 2.0]
    assert len(minmax_buckets(np.array([], dtype=np.int64), np.array([]), 10)) == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        minmax_buckets(np.arange(3), np.arange(3.0), 0)
    with pytest.raises(ValueError):
        minmax_buckets(np.arange(3), np.arange(4.0), 2)


def test_spread_thins_evenly_keeping_both_ends():
    picked = spread(np.arange(10_000), 100)
    assert picked.size == 100 and picked[0] == 0 and picked[-1] == 9_999
    assert np.all(np.diff(picked) > 0)
    assert spread(np.arange(5), 100).tolist() == [0, 1, 2, 3, 4]
