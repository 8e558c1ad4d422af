"""Training survives the broker and the Dagster daemon going away: every fit answered with
202 is trained exactly once (one run takes it, one version holds it)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.faults.tools import submit, training_runs, versions, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def exactly_once(dagster, mlflow_server, jobs: dict[str, str]) -> dict[str, int]:
    """Counts that prove it: each job in one run, each series one version tagged with it."""
    taken = Counter(j for run in training_runs(dagster) for j in run["job_ids"])
    found = versions(mlflow_server.url, list(jobs))
    counts = {
        "jobs": len(jobs),
        "in_one_run": sum(taken[j] == 1 for j in jobs.values()),
        "in_several_runs": sum(taken[j] > 1 for j in jobs.values()),
        "versions": sum(len(v) for v in found.values()),
        "series_with_one_version": sum(
            [v["version"] for v in found[s]] == [1] and found[s][0]["job_id"] == j
            for s, j in jobs.items()
        ),
    }
    return counts


def all_once(n: int) -> dict[str, int]:
    """The counts of `exactly_once` when each of n jobs was trained exactly once."""
    return {"jobs": n, "in_one_run": n, "in_several_runs": 0, "versions": n,
            "series_with_one_version": n}


def test_300_fits_while_the_broker_stops_and_starts_twice(
    api, client, dagster, mlflow_server, rabbitmq, series_id, record
):
    series = [f"{series_id}_b{i:03d}" for i in range(300)]
    jobs: dict[str, str] = {}

    def submitter() -> None:  # ~3 fits a second, so both outages fall in the middle
        for start in range(0, 300, 10):
            began = time.monotonic()
            jobs.update(submit(api.base_url, series[start : start + 10], seed0=1000 + start))
            time.sleep(max(0.0, 3 - (time.monotonic() - began)))

    thread = threading.Thread(target=submitter)
    thread.start()
    outages = []
    for moment in (100, 200):
        while len(jobs) < moment:
            time.sleep(0.1)
        stopped_at = len(jobs)
        rabbitmq.stop()
        time.sleep(5)  # fits keep coming: the API keeps them in its outbox
        rabbitmq.start()
        outages.append((stopped_at, len(jobs)))
    thread.join()

    done = wait_jobs(client, list(jobs.values()), timeout=900)
    statuses = Counter(job["status"] for job in done.values())
    counts = exactly_once(dagster, mlflow_server, jobs)
    assert all(before < after for before, after in outages), outages  # fits during each
    record(
        f"broker stopped twice during 300 fits (at fits {outages}): {dict(statuses)}, {counts}, "
        f"dead letters {rabbitmq.queue_depth('training-jobs-dlq')}"
    )
    assert statuses == {"succeeded": 300}
    assert counts == all_once(300)
    assert rabbitmq.queue_depth("training-jobs-dlq") == 0


def test_the_daemon_killed_three_times_during_a_burst_of_100(
    api, client, dagster, mlflow_server, series_id, record
):
    series = [f"{series_id}_d{i:03d}" for i in range(100)]
    jobs: dict[str, str] = {}
    thread = threading.Thread(
        target=lambda: jobs.update(submit(api.base_url, series, seed0=5000, threads=2))
    )
    thread.start()
    kills = 0
    for moment in (20, 60, 100):  # while fits arrive, then while their runs are requested
        while len(jobs) < moment and thread.is_alive():
            time.sleep(0.1)
        time.sleep(1.5 if moment == 100 else 0)
        dagster.daemon.kill()
        kills += 1
        dagster.daemon.start()
    thread.join()

    done = wait_jobs(client, list(jobs.values()), timeout=600)
    statuses = Counter(job["status"] for job in done.values())
    counts = exactly_once(dagster, mlflow_server, jobs)
    record(f"daemon killed {kills} times during 100 fits: {dict(statuses)}, {counts}")
    assert statuses == {"succeeded": 100}
    assert counts == all_once(100)
