"""Predictions through a real Ray Serve, loading from a real MLflow registry."""

from __future__ import annotations

import time

import httpx
import numpy as np
import polars as pl
import pytest

from core.contracts import TrainingConfig, TrainingEvent
from core.naming import model_name
from core.training import train
from pipelines.broker import Broker
from pipelines.registry import Registry
from pipelines.training import pip_requirements


def register(mlflow_server, series_id: str, seed: int, level: float = 0.3) -> int:
    """Train and promote a statistical model the way the pipeline does; return its version."""
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({"timestamp": np.arange(1, 10_001) * 300,
                          "value": level + 0.02 * rng.standard_normal(10_000)})
    result = train(frame, TrainingConfig(algorithm="statistical"))
    registry = Registry(mlflow_server.url, retention=10)
    version = registry.log_and_register(series_id, result, run_tags={"series_id": series_id},
                                        version_tags={"job_id": ""},
                                        pip_requirements=pip_requirements())
    registry.promote(series_id, version.version)
    return version.version


def announce(rabbitmq, series_id: str, version: int) -> None:
    Broker(rabbitmq.url).publish_event(TrainingEvent(
        event="completed", job_id=None, series_id=series_id, model_name=model_name(series_id),
        version=version))


@pytest.fixture
def http(serve):
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        yield client


def predict(http, series_id: str, value: float, **params) -> httpx.Response:
    return http.post(f"/predict/{series_id}", json={"timestamp": 1_733_587_200, "value": value},
                     params=params)


def test_single_batch_versions_and_errors(http, mlflow_server, series_id):
    register(mlflow_server, series_id, seed=1)
    register(mlflow_server, series_id, seed=2, level=5.0)  # v2 is production

    single = predict(http, series_id, 0.3)
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["model"] == {"name": model_name(series_id), "version": 2, "source": "registry"}
    assert body["anomaly"] is True and body["confidence"] == "high"  # 0.3 is far from 5.0
    assert body["expected_range"]["low"] < 5.0 < body["expected_range"]["high"]
    assert body["latency_ms"] > 0 and single.headers["x-request-id"]

    v1 = predict(http, series_id, 0.3, version=1).json()
    assert v1["model"]["version"] == 1 and v1["anomaly"] is False

    columnar = http.post(f"/predict/{series_id}/batch",
                         json={"timestamps": [1, 2, 3], "values": [5.0, 5.01, 9.0]}).json()
    assert columnar["results"]["anomaly"] == [False, False, True]
    assert columnar["summary"]["points"] == 3 and columnar["summary"]["anomalies"] == 1
    rows = http.post(f"/predict/{series_id}/batch", json={"data": [
        {"timestamp": 1, "value": 5.0}, {"timestamp": 2, "value": 9.0}]}).json()
    assert [r["anomaly"] for r in rows["results"]] == [False, True]

    n = 32_768
    ok = http.post(f"/predict/{series_id}/batch",
                   json={"timestamps": list(range(1, n + 1)), "values": [5.0] * n})
    assert ok.status_code == 200 and ok.json()["summary"]["points"] == n
    too_many = http.post(f"/predict/{series_id}/batch",
                         json={"timestamps": list(range(1, n + 2)), "values": [5.0] * (n + 1)})
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "32768" in too_many.text

    missing_version = predict(http, series_id, 0.3, version=99)
    assert (missing_version.status_code, missing_version.json()["error"]["code"]) == (
        404, "INVALID_VERSION")
    assert predict(http, "a.b", 1.0).json()["error"]["code"] == "INVALID_SERIES_ID"
    metrics = http.get("/metrics").text  # the replica's own metrics, not only the requests'
    for name in ("model_load_seconds_count", "registry_breaker_state", "model_cache_hits",
                 "anomalies_flagged_total", "http_request_duration_seconds_bucket"):
        assert name in metrics, name
    bad = http.post(f"/predict/{series_id}", json={"timestamp": 1, "value": "x"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "INVALID_INPUT")


def test_unknown_series(http, series_id):
    single = predict(http, series_id, 1.0)
    assert (single.status_code, single.json()["error"]["code"]) == (404, "MODEL_NOT_FOUND")
    values = [0.3, 0.31, 0.29, 0.3, 0.32, 0.28, 0.3, 5.0]
    batch = http.post(f"/predict/{series_id}/batch",
                      json={"timestamps": list(range(1, 9)), "values": values}).json()
    assert batch["confidence"] == "low" and batch["model"]["source"] == "baseline"
    assert batch["results"]["anomaly"] == [False] * 7 + [True]


def test_a_new_production_version_is_served_within_5_s_of_its_event(http, mlflow_server,
                                                                     rabbitmq, series_id):
    register(mlflow_server, series_id, seed=3)
    assert predict(http, series_id, 0.3).json()["model"]["version"] == 1  # cached
    version = register(mlflow_server, series_id, seed=4, level=2.0)
    announce(rabbitmq, series_id, version)
    sent = time.monotonic()
    while (answer := predict(http, series_id, 0.3).json())["model"]["version"] != version:
        assert time.monotonic() - sent < 5, "the new version was not served within 5 s"
        assert answer["model"]["version"] == 1  # never a miss or an error meanwhile
        time.sleep(0.05)


def test_registry_outage(http, serve, mlflow_server, series_id):
    cached, uncached, copied = (f"{series_id}_{s}" for s in ("cached", "uncached", "copied"))
    for i, sid in enumerate((cached, uncached, copied)):
        register(mlflow_server, sid, seed=10 + i)
    assert predict(http, cached, 0.3).status_code == 200
    assert predict(http, copied, 0.3).status_code == 200  # leaves a local copy on disk
    mlflow_server.stop()
    try:
        for _ in range(20):
            started = time.perf_counter()
            assert predict(http, cached, 0.3).status_code == 200
            assert time.perf_counter() - started < 0.1  # its usual latency
        for attempt in range(5):
            started = time.perf_counter()
            r = predict(http, uncached, 0.3)
            elapsed = time.perf_counter() - started
            assert (r.status_code, r.json()["error"]["code"]) == (503, "REGISTRY_UNAVAILABLE")
            assert elapsed < 0.5, f"attempt {attempt} took {elapsed:.3f} s"
        assert http.get("/health").json()["breaker"] == "open"

        serve.stop()  # a restarted replica has an empty cache but its local copies
        serve.start()
        with httpx.Client(base_url=serve.url, timeout=30) as fresh:
            local = predict(fresh, copied, 0.3).json()
            assert local["model"]["source"] == "local" and local["confidence"] == "medium"
            assert predict(fresh, uncached, 0.3).status_code == 503
    finally:
        mlflow_server.start()
    with httpx.Client(base_url=serve.url, timeout=30) as fresh:
        deadline = time.monotonic() + 30  # breaker reset 5 s, then one trial call
        while (r := predict(fresh, uncached, 0.3)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.5)
        assert r.json()["model"]["source"] == "registry"
        assert fresh.get("/health").json()["breaker"] == "closed"


def test_end_to_end_fit_train_predict(client, dagster, http, series_id):
    """Through every real service: spikes of 6 sigma and more are flagged (recall >= 0.99),
    normal points almost never (false positives <= 0.5 %) by the statistical model."""
    from tests.integration.test_pipeline import wait_job

    rng = np.random.default_rng(21)
    mean, sigma = 0.3, 0.02
    ts = list(range(1_733_000_000, 1_733_000_000 + 300 * 10_000, 300))
    fit = client.post(f"/fit/{series_id}", json={
        "training_data": {"timestamps": ts, "values": (mean + sigma * rng.standard_normal(
            10_000)).tolist()},
        "config": {"algorithm": "statistical"}})
    assert fit.status_code == 202
    assert wait_job(client, fit.json()["job_id"])["status"] == "succeeded"

    normal = mean + sigma * rng.standard_normal(20_000)
    spikes = mean + sigma * rng.uniform(6, 12, 500) * rng.choice([-1, 1], 500)
    values = np.concatenate([normal, spikes])
    r = http.post(f"/predict/{series_id}/batch", json={
        "timestamps": list(range(1, len(values) + 1)), "values": values.tolist()})
    assert r.status_code == 200, r.text
    flags = np.array(r.json()["results"]["anomaly"])
    recall = flags[20_000:].mean()
    false_positives = flags[:20_000].mean()
    assert recall >= 0.99, recall
    assert false_positives <= 0.005, false_positives
