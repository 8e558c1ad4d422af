"""The README's main command: the whole platform, once, against the running stack.

    make demo        (starts the stack first)

Three synthetic vibration-like series are fitted through the training API (one per
algorithm), trained by the Dagster pipeline and registered in MLflow; then Ray Serve
scores normal and injected anomalous points, single and in a batch.
"""

from __future__ import annotations

import json
import math
import sys
import time

import httpx
import numpy as np

API = "http://127.0.0.1:8030"
SERVE = "http://127.0.0.1:8000"
MLFLOW = "http://127.0.0.1:5000"
DAGSTER = "http://127.0.0.1:3000"
ALGORITHMS = ("statistical", "robust", "isolation_forest")
POINTS = 10_000
STEP = 300  # five-minute samples


def vibration(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """A daily cycle, a slow drift and noise: what a healthy bearing's RMS looks like."""
    i = np.arange(n)
    return (level + 0.05 * level * np.sin(i / 288 * 2 * math.pi) + 1e-6 * i
            + rng.normal(0, 0.02 * level, n))


def fit(api: httpx.Client, series_id: str, algorithm: str, values: np.ndarray,
        start: int) -> dict:
    r = api.post(f"/fit/{series_id}", json={
        "training_data": {"timestamps": list(range(start, start + STEP * len(values), STEP)),
                          "values": values.tolist()},
        "config": {"algorithm": algorithm, "window_hours": 168},
        "metadata": {"triggered_by": "make demo", "description": f"demo {algorithm}"},
    })
    if r.status_code != 202:
        raise SystemExit(f"fit of {series_id} answered {r.status_code}: {r.text}")
    return r.json()


def wait_trained(api: httpx.Client, jobs: dict[str, dict], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = set(jobs)
    while pending and time.monotonic() < deadline:
        for series_id in sorted(pending):
            job = api.get(jobs[series_id]["status_url"]).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                jobs[series_id] = job
                pending.discard(series_id)
                print(f"  {series_id}: {job['status']}"
                      + (f", model version {job['model_version']}" if job["model_version"]
                         else f" ({job['error']})"))
        time.sleep(1)
    if pending:
        raise SystemExit(f"still training after {timeout} s: {sorted(pending)}; `make status`")


def wait_served(serve: httpx.Client, series_id: str, timeout: float = 30) -> None:
    """The completion event reaches Serve within seconds; wait until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = serve.post(f"/predict/{series_id}", json={"timestamp": 1, "value": 0.0})
        if r.status_code == 200:
            return
        time.sleep(0.5)
    raise SystemExit(f"Serve does not answer for {series_id}: {r.status_code} {r.text}")


def main() -> int:
    rng = np.random.default_rng(7)
    run = int(time.time())
    start = run // STEP * STEP - STEP * POINTS
    series = {f"demo_{run}_{axis}": (algorithm, 0.3 + 0.1 * k)
              for k, (axis, algorithm) in enumerate(zip(("radial", "axial", "tangential"),
                                                        ALGORITHMS, strict=True))}
    with httpx.Client(base_url=API, timeout=30) as api, \
            httpx.Client(base_url=SERVE, timeout=30) as serve:
        print("== fitting three series through the training API")
        jobs = {sid: fit(api, sid, algorithm, vibration(rng, POINTS, level), start)
                for sid, (algorithm, level) in series.items()}
        bad = api.post(f"/fit/demo_{run}_radial", json={
            "training_data": {"timestamps": [3, 2, 1], "values": [1, 2, 3]}})
        print(f"  an invalid fit is refused: {bad.status_code} {bad.json()['error']['code']}")
        print("== waiting for the Dagster pipeline to train and register them")
        wait_trained(api, jobs)

        print("== predicting with Ray Serve")
        rows = []
        for series_id, (algorithm, level) in series.items():
            wait_served(serve, series_id)
            for label, value in (("normal", level), ("spike", level * 3)):
                r = serve.post(f"/predict/{series_id}",
                               json={"timestamp": start + STEP * POINTS, "value": value}).json()
                rows.append((series_id, algorithm, f"single {label}", 1, int(r["anomaly"]),
                             r["model"]["version"], r["confidence"], r["latency_ms"]))
            values = vibration(rng, 2_000, level)
            spikes = rng.choice(len(values), 10, replace=False)
            values[spikes] += 0.5 * level * rng.choice([-1, 1], 10)  # about 12 sigma
            r = serve.post(f"/predict/{series_id}/batch", json={
                "timestamps": list(range(start + STEP * POINTS, start + STEP * (POINTS + 2_000),
                                         STEP)),
                "values": values.tolist()}).json()
            flagged = set(np.flatnonzero(r["results"]["anomaly"]).tolist())
            rows.append((series_id, algorithm, "batch, 10 spikes", 2_000,
                         r["summary"]["anomalies"], r["model"]["version"], r["confidence"],
                         r["latency_ms"]))
            print(f"  {series_id}: {len(flagged & set(spikes.tolist()))} of 10 injected "
                  f"spikes flagged, {len(flagged - set(spikes.tolist()))} other points")

    print()
    header = ("series", "algorithm", "request", "points", "anomalies", "version", "confidence",
              "ms")
    widths = (28, 18, 18, 8, 11, 9, 12, 8)
    print("".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    one = next(iter(jobs.values()))
    print(f"""
Training API docs   {API}/docs
Dagster UI          {DAGSTER}/assets/anomaly_model   (run {DAGSTER}/runs/{one['dagster_run_id']})
MLflow              {MLFLOW}/#/models
Ray Serve           {SERVE}/docs   (health {SERVE}/health)""")
    health = httpx.get(f"{SERVE}/health", timeout=10).json()
    print(f"\nServe health: {json.dumps(health)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
