"""Training data on a local folder and on S3 (moto's S3 server standing in for MinIO)."""

from __future__ import annotations

import uuid

import boto3
import numpy as np
import polars as pl
import pytest

from core.errors import InvalidSeriesId, StorageUnavailable
from core.storage import LocalDataStore, S3DataStore, data_store, to_frame


def frame(n: int = 1000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return to_frame(np.arange(1, n + 1) * 300, rng.normal(size=n))


@pytest.fixture
def s3_store(s3, monkeypatch) -> S3DataStore:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"data-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    store = data_store(f"s3://{bucket}/training", s3.endpoint)
    assert isinstance(store, S3DataStore)
    return store


@pytest.fixture
def local_store(tmp_path) -> LocalDataStore:
    store = data_store(str(tmp_path / "data"))
    assert isinstance(store, LocalDataStore)
    return store


@pytest.fixture(params=["local", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def test_write_scan_and_delete(store):
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    uri_a = store.write("sensor_1", job_a, frame(seed=1))
    store.write("sensor_1", job_b, frame(seed=2))
    store.write("sensor_2", uuid.uuid4(), frame(seed=3))
    assert str(job_a) in uri_a and "sensor_1" in uri_a

    one = store.scan(uri_a).collect()
    assert one.schema == pl.Schema({"timestamp": pl.Int64, "value": pl.Float64})
    assert one.equals(frame(seed=1))
    assert store.scan_series("sensor_1").select(pl.len()).collect().item() == 2000

    store.delete(uri_a)
    assert store.scan_series("sensor_1").select(pl.len()).collect().item() == 1000


def test_series_ids_are_checked_before_any_path_is_built(store):
    with pytest.raises(InvalidSeriesId):
        store.write("../escape", uuid.uuid4(), frame())
    with pytest.raises(InvalidSeriesId):
        store.scan_series("a/b")


def test_local_uris_outside_the_root_are_refused(local_store, tmp_path):
    with pytest.raises(ValueError, match="not under the data root"):
        local_store.scan((tmp_path / "elsewhere.parquet").as_uri())


def test_an_unwritable_root_is_a_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageUnavailable):
        LocalDataStore(blocker).write("sensor_1", uuid.uuid4(), frame())
