"""The README's main command: submit a fit to the running stack and show what became of it.

    make demo        (starts the stack first)

It submits a fit, shows an invalid one refused, follows the job through the Dagster
pipeline until its model is registered in MLflow, and shows the production version.
"""

from __future__ import annotations

import json
import math
import sys
import time

import httpx
import numpy as np

API = "http://127.0.0.1:8030"
MLFLOW = "http://127.0.0.1:5000"
DAGSTER = "http://127.0.0.1:3000"


def training_data(n: int = 10_000) -> dict:
    """A week and a half of 5-minute vibration levels with a daily cycle and noise."""
    rng = np.random.default_rng()
    i = np.arange(n)
    values = 0.3 + 0.05 * np.sin(i / 288 * 2 * math.pi) + rng.normal(0, 0.01, n)
    start = int(time.time()) // 300 * 300 - 300 * n
    return {"timestamps": (start + 300 * i).tolist(), "values": values.tolist()}


def show(title: str, payload: object) -> None:
    print(f"\n== {title}")
    print(json.dumps(payload, indent=2)[:2000])


def main() -> int:
    series_id = f"demo_sensor_{int(time.time())}_radial"
    with httpx.Client(base_url=API, timeout=30) as api:
        r = api.post(
            f"/fit/{series_id}",
            json={
                "training_data": training_data(),
                "config": {"algorithm": "robust", "window_hours": 168},
                "metadata": {"triggered_by": "make demo", "description": "demo fit"},
            },
        )
        show(f"POST /fit/{series_id} -> {r.status_code}", r.json())
        if r.status_code != 202:
            return 1
        job = r.json()

        bad = api.post(
            f"/fit/{series_id}",
            json={"training_data": {"timestamps": [3, 2, 1], "values": [1, 2, 3]}},
        )
        show(f"an invalid fit -> {bad.status_code}", bad.json())

        show(f"GET {job['status_url']}", api.get(job["status_url"]).json())

        job = wait_for(api, job["status_url"])
        show(f"GET {job['job_id']} once trained", job)
        if job["status"] != "succeeded":
            return 1

    model = httpx.get(f"{MLFLOW}/api/2.0/mlflow/registered-models/alias",
                      params={"name": f"model_od_{series_id}", "alias": "production"}, timeout=10)
    show(f"MLflow: model_od_{series_id}@production", model.json()["model_version"])
    print(f"\nDagster run:   {DAGSTER}/runs/{job['dagster_run_id']}")
    print(f"MLflow run:    {MLFLOW}/#/experiments/0/runs/{job['run_id']}".replace(
        "/experiments/0", ""))
    print(f"Lineage:       {DAGSTER}/assets/anomaly_model")
    return 0


def wait_for(api: httpx.Client, status_url: str, timeout: float = 300) -> dict:
    """Poll the job until the pipeline has trained (or failed) it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        job = api.get(status_url).json()
        if job["status"] != last:
            print(f"job is {job['status']}")
            last = job["status"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise SystemExit(f"the job is still {last} after {timeout} s: see `make status`")


if __name__ == "__main__":
    sys.exit(main())
