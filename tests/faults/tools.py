"""What the fault scenarios share: submitting fits, waiting for jobs, counting versions and
runs, and finding the processes to kill."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from mlflow import MlflowClient

from core.naming import model_name
from tests.conftest import make_series

ENDED = ("succeeded", "failed", "cancelled")


def submit(base_url: str, series_ids: list[str], seed0: int = 0, threads: int = 4) -> dict:
    """POST one fit per series (distinct data each) from a few threads: series → job id."""

    def one(i_sid: tuple[int, str]) -> tuple[str, str]:
        i, sid = i_sid
        with httpx.Client(base_url=base_url, timeout=60) as client:
            r = client.post(f"/fit/{sid}", json={"training_data": make_series(seed=seed0 + i)})
        assert r.status_code == 202, r.text
        return sid, r.json()["job_id"]

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, enumerate(series_ids)))


def wait_jobs(client: httpx.Client, job_ids: list[str], timeout: float) -> dict[str, dict]:
    """Every job's final row; fails naming the jobs still open after `timeout`."""
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(job_ids):
        for job_id in job_ids:
            if job_id not in done:
                job = client.get(f"/jobs/{job_id}").json()
                if job["status"] in ENDED:
                    done[job_id] = job
        if len(done) < len(job_ids):
            open_jobs = Counter(
                client.get(f"/jobs/{j}").json()["status"] for j in job_ids if j not in done
            )
            assert time.monotonic() < deadline, f"jobs still open after {timeout} s: {open_jobs}"
            time.sleep(2)
    return done


def versions(mlflow_url: str, series_ids: list[str]) -> dict[str, list[dict]]:
    """Every registered version of each series' model, with its tags."""
    client = MlflowClient(mlflow_url)
    found: dict[str, list[dict]] = {sid: [] for sid in series_ids}
    names = {model_name(sid): sid for sid in series_ids}
    prefix = os.path.commonprefix(list(names))
    token = None
    while True:
        page = client.search_model_versions(
            f"name LIKE '{prefix}%'", max_results=1000, page_token=token
        )
        for mv in page:
            if mv.name in names:
                found[names[mv.name]].append({"version": int(mv.version), **mv.tags})
        token = page.token
        if not token:
            return found


def training_runs(dagster) -> list[dict]:
    """Every training run of the instance: status and the job ids it was given."""
    data = dagster.graphql(
        """{ runsOrError(filter: {tags: [{key: "adp/kind", value: "training"}]}) {
              ... on Runs { results { runId status tags { key value } } } } }"""
    )
    runs = []
    for run in data["runsOrError"]["results"]:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        job_ids = [j for j in tags.get("adp/job_ids", "").split(",") if j]
        runs.append({"run_id": run["runId"], "status": run["status"], "job_ids": job_ids})
    return runs


def children(pid: int) -> list[int]:
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:  # it ended meanwhile
        pass
    return kids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def run_workers(code_server_pid: int) -> list[int]:
    """The processes running Dagster runs: children of the code server's fork server."""
    workers = []
    for kid in children(code_server_pid):
        if "forkserver" in cmdline(kid):
            workers += children(kid)
    return workers


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for kid in children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


def pids_named(fragment: str, under: int) -> list[int]:
    """Processes below `under` (another session's services are not ours to kill)."""
    return [pid for pid in descendants(under) if fragment in cmdline(pid)]


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
