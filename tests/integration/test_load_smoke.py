"""A few seconds of each load profile through Locust's own command line against the real Ray
Serve: the locustfile's requests and checks hold on the real API (no timing is asserted)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_serving import register

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load_series(mlflow_server) -> list[str]:
    series = [f"load_smoke_{i}" for i in range(3)]
    for i, series_id in enumerate(series):
        register(mlflow_server, series_id, seed=i)
    return series


def locust(serve, series: list[str], profile: str, out: Path) -> dict[str, dict]:
    env = {**os.environ, "LOAD_PROFILE": profile, "LOAD_SERIES": ",".join(series),
           "LOAD_NO_MODEL_SERIES": "load_smoke_none", "LOAD_NO_MODEL_SHARE": "0.2"}
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    run = subprocess.run(
        [str(Path(sys.executable).with_name("locust")), "-f", "load_tests/locustfile.py",
         "--headless", "-u", "6", "-r", "6", "-t", "6s", "--host", serve.url,
         "--csv", str(out / profile), "--only-summary", "--loglevel", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    rows = {}
    with open(out / f"{profile}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["Name"]] = row
    # Locust exits 1 when any request failed; the failures file says which and why.
    failures = (out / f"{profile}_failures.csv").read_text()
    assert run.returncode == 0, f"{run.stderr[-2000:]}\n{failures}"
    return rows


def test_mixed_profile_against_real_serve(serve, load_series, tmp_path):
    rows = locust(serve, load_series, "mixed", tmp_path)
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    for name in ("/predict/{id}", "/predict/{id}/batch"):
        assert int(rows[name]["Request Count"]) > 0, name


def test_anomaly_profile_flags_exactly_the_injected_points(serve, load_series, tmp_path):
    rows = locust(serve, load_series, "anomaly", tmp_path)
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    for name in ("/predict/{id} [probe]", "/predict/{id} [injected]", "/predict/{id} [normal]",
                 "/predict/{id}/batch [injected]"):
        assert int(rows[name]["Request Count"]) > 0, name


def test_series_found_in_the_registry_by_default(mlflow_server, load_series):
    """Without a series list the locustfile loads every served model of the registry."""
    code = ("import sys; sys.path.insert(0, 'load_tests'); import locustfile; "
            "print(','.join(locustfile.catalog().series))")
    env = {**os.environ, "LOAD_MLFLOW_URI": mlflow_server.url, "LOCUST_SKIP_MONKEY_PATCH": "1"}
    for name in ("LOAD_SERIES_FILE", "LOAD_SERIES"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert set(load_series) <= set(run.stdout.strip().split(","))
