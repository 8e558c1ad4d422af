"""A training run's process killed mid-run: run monitoring notices, the run fails, and its
unfinished jobs end `failed` with a reason. Nothing stays `running`."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.tools import kill, run_workers, submit, training_runs, versions, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_a_training_run_killed_mid_run(api, client, dagster, mlflow_server, series_id, record):
    series = [f"{series_id}_k{i:02d}" for i in range(30)]
    jobs = submit(api.base_url, series, seed0=8000)
    deadline = time.monotonic() + 120
    while True:  # the run has trained some of its jobs, and is training others
        statuses = Counter(client.get(f"/jobs/{j}").json()["status"] for j in jobs.values())
        workers = run_workers(dagster.code.proc.pid)
        if workers and statuses["running"] and 1 <= statuses["succeeded"] < len(jobs) // 2:
            break
        assert time.monotonic() < deadline, f"no run training these jobs: {statuses}"
        time.sleep(0.2)
    kill(workers)

    done = wait_jobs(client, list(jobs.values()), timeout=300)  # run monitoring polls every 5 s
    statuses = Counter(job["status"] for job in done.values())
    failed = [job for job in done.values() if job["status"] == "failed"]
    runs = {r["run_id"]: r for r in training_runs(dagster)}
    # the failed jobs name their run (those not started yet have no dagster_run_id)
    killed = {r for r in runs if any(r in job["error"]["message"] for job in failed)}
    found = versions(mlflow_server.url, series)
    record(
        f"run process killed mid-run: {dict(statuses)} of {len(jobs)} jobs, "
        f"failed runs {sorted(runs[r]['status'] for r in killed)}, "
        f"versions {sum(map(len, found.values()))}"
    )
    assert failed, "the kill landed after every job had ended"
    assert set(statuses) <= {"succeeded", "failed"}
    for job in failed:
        assert job["error"]["code"] == "RUN_FAILED", job
    assert len(killed) == 1 and {runs[r]["status"] for r in killed} == {"FAILURE"}
    # a job killed between registering its version and recording it may leave that version
    assert all(len(v) <= 1 for v in found.values())
    assert all(len(found[s]) == 1 for s, j in jobs.items() if done[j]["status"] == "succeeded")
