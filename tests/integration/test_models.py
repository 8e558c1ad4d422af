"""Model management through the real API, MLflow, Dagster, Ray Serve and a real browser:
listing, promotion and rollback served within 5 s, audit entries, shadow evaluations that
promote or drop their candidate, the plot page drawn by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from core.contracts import TrainingConfig
from core.training import train
from pipelines.registry import Registry
from pipelines.training import pip_requirements
from tests.integration.test_pipeline import wait_job

START = 1_733_000_000


def fit(client: httpx.Client, series_id: str, level: float, seed: int,
        spikes: int = 0) -> dict:
    """Fit through the API and Dagster; the same timestamps each time, so the newest fit is
    the whole training set of its version."""
    rng = np.random.default_rng(seed)
    values = level + 0.02 * rng.standard_normal(10_000)
    values[rng.choice(10_000, spikes, replace=False)] += 0.5
    r = client.post(f"/fit/{series_id}", json={
        "training_data": {"timestamps": list(range(START, START + 300 * 10_000, 300)),
                          "values": values.tolist()},
        "config": {"algorithm": "statistical"}})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=180)
    assert job["status"] == "succeeded", job
    return job


def register(mlflow_server, series_id: str, level: float, seed: int,
             production: bool) -> int:
    """A version registered as the pipeline does, promoted only when asked."""
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({"timestamp": np.arange(1, 10_001) * 300,
                          "value": level + 0.02 * rng.standard_normal(10_000)})
    registry = Registry(mlflow_server.url, retention=10)
    version = registry.log_and_register(
        series_id, train(frame, TrainingConfig(algorithm="statistical")),
        run_tags={"series_id": series_id}, version_tags={"job_id": "", "algorithm": "statistical"},
        pip_requirements=pip_requirements()).version
    if production:
        registry.promote(series_id, version)
    return version


@pytest.fixture
def http(serve):
    with httpx.Client(base_url=serve.url, timeout=30) as c:
        yield c


def served_version(http: httpx.Client, series_id: str) -> int:
    r = http.post(f"/predict/{series_id}", json={"timestamp": START, "value": 0.3})
    assert r.status_code == 200, r.text
    return r.json()["model"]["version"]


def wait_served(http: httpx.Client, series_id: str, version: int, since: float) -> float:
    while (got := served_version(http, series_id)) != version:
        assert time.monotonic() - since < 5, f"still v{got} 5 s after the promotion"
        time.sleep(0.05)
    return time.monotonic() - since


def audit(state_dir: Path, series_id: str) -> list[dict]:
    path = state_dir / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["series_id"] == series_id]


@pytest.mark.timeout(600)  # two trainings through Dagster, and the services' start if first
def test_listing_promotion_rollback_and_audit(client, dagster, http, state_dir, series_id):
    first, second = fit(client, series_id, 0.3, 1), fit(client, series_id, 5.0, 2)

    page = client.get("/series", params={"prefix": series_id}).json()
    assert page["total"] == 1
    (row,) = page["items"]
    assert row["series_id"] == series_id and row["model"] == f"model_od_{series_id}"
    assert (row["production_version"], row["shadow_version"], row["versions_kept"]) == (2, None, 2)
    assert row["algorithm"] == "statistical" and row["last_trained"]
    listing = client.get("/series", params={"page_size": 1})
    assert listing.status_code == 200 and len(listing.json()["items"]) == 1

    versions = client.get(f"/models/{series_id}/versions").json()
    assert versions["production_version"] == 2
    v2, v1 = versions["versions"]
    assert (v2["version"], v2["alias"], v1["version"], v1["alias"]) == (2, "production", 1, None)
    for view, job in ((v1, first), (v2, second)):
        assert view["job_id"] == job["job_id"] and view["algorithm"] == "statistical"
        assert view["run_id"] == job["run_id"] and job["run_id"] in view["run_url"]
        assert view["metrics"]["points"] == 10_000 and "threshold" in view["metrics"]
        assert len(view["data_sha256"]) == 64 and view["created_at"]

    assert served_version(http, series_id) == 2  # cached in serving
    r = client.post(f"/models/{series_id}/versions/1/promote", headers={"X-Actor": "alice"})
    promoted = time.monotonic()
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version"], body["previous_version"], body["changed"]) == (1, 2, True)
    assert body["promoted_by"] == "alice" and body["serving_notified"] is True
    rollback_s = wait_served(http, series_id, 1, promoted)
    print(f"rollback served after {rollback_s:.3f} s")  # noqa: T201

    again = client.post(f"/models/{series_id}/versions/1/promote").json()
    assert again["changed"] is False
    r = client.post(f"/models/{series_id}/versions/2/promote")  # roll forward, no header
    wait_served(http, series_id, 2, time.monotonic())
    assert r.json()["promoted_by"] == "anonymous"

    entries = [e for e in audit(state_dir, series_id) if e["action"] == "promote"]
    assert [(e["version"], e["previous_version"], e["actor"]) for e in entries] == [
        (1, 2, "alice"), (2, 1, "anonymous")]
    assert all(e["time"] and e["request_id"] for e in entries)
    tagged = client.get(f"/models/{series_id}/versions").json()["versions"]
    assert [(v["version"], v["promoted_by"]) for v in tagged] == [(2, "anonymous"), (1, "alice")]

    for path, code in ((f"/models/{series_id}/versions/99/promote", "INVALID_VERSION"),
                       (f"/models/{series_id}x/versions/1/promote", "MODEL_NOT_FOUND"),
                       (f"/models/{series_id}/versions/99/shadow", "INVALID_VERSION")):
        r = client.post(path)
        assert (r.status_code, r.json()["error"]["code"]) == (404, code), path
    r = client.get(f"/models/{series_id}x/versions")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "MODEL_NOT_FOUND")
    r = client.post("/models/bad-id/versions/1/promote")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_SERIES_ID")
    r = client.post(f"/models/{series_id}/versions/2/shadow")  # production cannot be a shadow
    assert (r.status_code, r.json()["error"]["code"]) == (409, "INVALID_VERSION")


def shadow_until_decided(client, http, series_id: str, values: np.ndarray) -> dict:
    """Send live traffic until the evaluation is decided; every answer is production's."""
    deadline = time.monotonic() + 60
    while (state := client.get(f"/models/{series_id}/shadow").json())["status"] in (
            "evaluating", "deciding"):
        assert time.monotonic() < deadline, state
        r = http.post(f"/predict/{series_id}/batch",
                      json={"timestamps": list(range(1, values.size + 1)),
                            "values": values.tolist()})
        assert r.status_code == 200 and r.json()["model"]["version"] == 1, r.text
        assert r.json()["latency_ms"] < 250  # the shadow is scored after the answer
        single = http.post(f"/predict/{series_id}", json={"timestamp": 1, "value": 0.3}).json()
        assert single["model"]["version"] == 1
        time.sleep(0.2)
    return state


def test_shadow_that_agrees_is_promoted(client, http, mlflow_server, state_dir, series_id):
    register(mlflow_server, series_id, 0.3, 11, production=True)
    register(mlflow_server, series_id, 0.3, 12, production=False)  # same process, new sample
    assert served_version(http, series_id) == 1
    r = client.post(f"/models/{series_id}/versions/2/shadow", headers={"X-Actor": "bob"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["version"], r.json()["started_by"]) == (
        "evaluating", 2, "bob")
    assert client.get(f"/models/{series_id}/versions").json()["shadow_version"] == 2

    rng = np.random.default_rng(13)
    state = shadow_until_decided(client, http, series_id, 0.3 + 0.02 * rng.standard_normal(200))
    decided = time.monotonic()
    assert state["status"] == "promoted", state
    assert state["points"] >= 1000 and state["agreement_rate"] >= 0.95
    assert state["production_latency_ms"] > 0 and state["shadow_latency_ms"] > 0
    assert state["requests"] > 0 and "agreement" in state["reason"]
    versions = client.get(f"/models/{series_id}/versions").json()
    assert (versions["production_version"], versions["shadow_version"]) == (2, None)
    wait_served(http, series_id, 2, decided)
    actions = [(e["action"], e["actor"], e["version"]) for e in audit(state_dir, series_id)]
    assert actions == [("shadow_start", "bob", 2), ("promote", "shadow-evaluation", 2)]
    metrics = http.get("/metrics").text
    assert 'shadow_comparison_seconds_count{model="shadow"}' in metrics


def test_shadow_that_disagrees_is_dropped(client, http, mlflow_server, state_dir, series_id):
    register(mlflow_server, series_id, 0.3, 21, production=True)
    register(mlflow_server, series_id, 0.8, 22, production=False)  # flags every 0.3 point
    assert client.post(f"/models/{series_id}/versions/2/shadow").status_code == 200

    rng = np.random.default_rng(23)
    state = shadow_until_decided(client, http, series_id, 0.3 + 0.02 * rng.standard_normal(200))
    assert state["status"] == "dropped", state
    assert state["points"] >= 1000 and state["agreement_rate"] < 0.95
    versions = client.get(f"/models/{series_id}/versions").json()
    assert (versions["production_version"], versions["shadow_version"]) == (1, None)
    assert served_version(http, series_id) == 1
    actions = [(e["action"], e["actor"]) for e in audit(state_dir, series_id)]
    assert actions == [("shadow_start", "anonymous"), ("shadow_dropped", "shadow-evaluation")]


def test_new_versions_can_be_registered_as_shadow(mlflow_server, series_id):
    registry = Registry(mlflow_server.url, retention=10, new_version_alias="shadow")
    first = register(mlflow_server, series_id, 0.3, 31, production=False)
    assert registry.promote_new(series_id, first) is None  # nothing to compare with yet
    second = register(mlflow_server, series_id, 0.3, 32, production=False)
    assert registry.promote_new(series_id, second) == first
    aliases = registry.client.get_registered_model(f"model_od_{series_id}").aliases
    assert aliases == {"production": str(first), "shadow": str(second)}


def test_plot_is_drawn_in_headless_chromium(client, dagster, api, series_id, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: run make deps"
    fit(client, series_id, 0.3, 41, spikes=30)
    r = client.get("/plot", params={"series_id": series_id, "version": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", r.text)  # nothing fetched
    doc = json.loads(re.search(r'id="plot-data">(.*?)</script>', r.text, re.S).group(1))
    assert doc["data_verified"] is True and doc["points"] == 10_000
    assert doc["flagged_total"] >= 30 and len(doc["envelope"]["t"]) == 1150

    url = f"{api.base_url}/plot?series_id={series_id}&version=1"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert 'data-rendered="true"' in dom
    path = re.search(r'<path id="series"[^>]*>', dom).group(0)
    assert f'data-points="{2 * len(doc["envelope"]["t"])}"' in path
    assert path.count("L") == 2 * len(doc["envelope"]["t"]) - 1
    assert dom.count('class="flagged"') == len(doc["flagged"]["t"]) == doc["flagged_total"]
    assert '<line id="centre"' in dom and '<rect id="band"' in dom
    assert "anomaly_rate" in dom  # the metrics table

    shot = tmp_path / "plot.png"
    subprocess.run([*flags, "--window-size=1300,900", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True, cwd=tmp_path)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    def near(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(pixels - rgb).sum(axis=1) < 60).sum())
    assert near((0x3B, 0x6F, 0xB6)) > 2000  # the data line
    assert near((0xD6, 0x27, 0x28)) > 30 * 10  # the flagged points
    assert near((0x1A, 0x9E, 0x4A)) > 500  # the centre line


def test_registry_outage_is_503(client, mlflow_server, series_id):
    register(mlflow_server, series_id, 0.3, 51, production=True)
    mlflow_server.stop()
    try:
        for path in (f"/models/{series_id}/versions", f"/plot?series_id={series_id}"):
            started = time.perf_counter()
            r = client.get(path)
            assert (r.status_code, r.json()["error"]["code"]) == (503, "REGISTRY_UNAVAILABLE"), \
                (path, r.text)
            assert time.perf_counter() - started < 5
        r = client.post(f"/models/{series_id}/versions/1/promote")
        assert (r.status_code, r.json()["error"]["code"]) == (503, "REGISTRY_UNAVAILABLE")
        assert client.get("/liveness").status_code == 200  # the event loop was never blocked
    finally:
        mlflow_server.start()
