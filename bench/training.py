"""Benchmark of training: fit → registered model through the real stack, against a plain loop.

Starts its own RabbitMQ node, MLflow server (SQLite, local artifacts), training API (uvicorn)
and Dagster instance (dagster-daemon + dagster-webserver over workspace.yaml, DAGSTER_HOME
holding a copy of dagster.yaml), trains one warm-up model, then:

1. **Pipeline.** Submits N fits (`--series`, each a distinct series of `--points` points)
   with `POST /fit`, all at once (8 concurrent requests, the stress case; default) or at a
   steady `--rate` fits/s, and waits until every job has succeeded. When `--steady-rate` is
   above 0 (default 0.47/s, the fleet's average retraining rate), a second set of N fresh
   series is then submitted at that pace and reported under `steady_*`.
2. **Baseline.** In this process, a plain loop over the same N Parquet files, as a
   hand-rolled worker would train them: read with polars → `core.training.train` → one
   MLflow run with params, metrics and `mlflow.sklearn.log_model(...,
   registered_model_name="baseline_model_od_{series}", pip_requirements=...,
   serialization_format="cloudpickle")` → move the `production` alias. Same MLflow server,
   other model names, one warm-up model first (as the pipeline had).

Definitions:

- **fit-to-registered latency** of a job = its `finished_at` in the job store (written by the
  Dagster run right after the version is registered, loaded back, checked and given the
  `production` alias) minus the moment this client received the POST's 202. Both are wall
  clocks of this machine, so no poll interval enters the figure.
- **fits_per_s** = N / (last job's `finished_at` − first POST sent).
- **baseline_fits_per_s** = N / duration of the plain loop (imports already paid).
- **orchestration_overhead** = baseline_fits_per_s / fits_per_s (how many times faster the
  plain loop is; it does less: no training window over all of the series' files, no
  re-validation, no load-back check, no version tags, no pruning, no job row, no event).

The table also splits the latency: 202 → Dagster run created (the sensor's pickup),
run created → run started (run queue, process start and its imports), run started → job
finished (training of the jobs ahead of it in the batch, then its own); and it shows one
model's time inside a run (job `started_at` → `finished_at`) beside the plain loop's.
The last line is one JSON object.

    .venv/bin/python bench/training.py [--series 100] [--points 10000] [--rate 0]
        [--steady-rate 0.47] [--max-jobs-per-run 25] [--sensor-interval 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.services import (  # noqa: E402
    Dagster,
    MlflowServer,
    RabbitMQ,
    TrainingApi,
)

# Other than the tests' (5682/15682, 8040, 5010, 3010) and the local stack's ports.
AMQP_PORT, MGMT_PORT, API_PORT, MLFLOW_PORT, DAGSTER_PORT = 5702, 15702, 8060, 5020, 3020
START = 1_733_000_000
CONCURRENCY = 8
TARGET_P50_S, TARGET_FITS_PER_S = 20.0, 0.5

RUNS_QUERY = """query Runs($cursor: String) { runsOrError(limit: 500, cursor: $cursor) {
  ... on Runs { results { runId status creationTime startTime endTime tags { key value } } } } }"""


@dataclass
class Fit:
    series_id: str
    job_id: str
    posted_at: float  # wall clock, request sent
    accepted_at: float  # wall clock, 202 received
    job: dict | None = None


def body(points: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    timestamps = np.arange(START, START + 300 * points, 300)
    values = 0.3 + 0.05 * rng.standard_normal(points)
    return orjson.dumps(
        {"training_data": {"timestamps": timestamps, "values": values}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def wall(stamp: str | None) -> float:
    if stamp is None:
        raise ValueError("missing time stamp")
    return datetime.fromisoformat(stamp).timestamp()


def pct(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)), 2) if samples else float("nan")


async def submit(base_url: str, prefix: str, n: int, points: int, rate: float) -> list[Fit]:
    """POST n fits, all at once (rate 0, CONCURRENCY at a time) or one every 1/rate s."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        loop = asyncio.get_running_loop()
        begin = loop.time()

        async def one(i: int) -> Fit:
            if rate > 0:
                await asyncio.sleep(max(0.0, begin + i / rate - loop.time()))
            payload = body(points, seed=zlib.crc32(prefix.encode()) + i)
            async with gate:
                posted = time.time()
                r = await client.post(
                    f"/fit/{prefix}_{i:06d}",
                    content=payload,
                    headers={"content-type": "application/json"},
                )
                accepted = time.time()
            if r.status_code != 202:
                raise RuntimeError(f"fit answered {r.status_code}: {r.text[:300]}")
            return Fit(f"{prefix}_{i:06d}", r.json()["job_id"], posted, accepted)

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def wait_done(base_url: str, fits: list[Fit], timeout: float) -> None:
    """Poll the job list until every job of `fits` succeeded; fail fast on a failed one."""
    pending = {f.job_id: f for f in fits}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while pending:
            failed = client.get("/jobs", params={"status": "failed", "page_size": 200}).json()
            for job in failed["items"]:
                if job["job_id"] in pending:
                    raise RuntimeError(f"job failed: {json.dumps(job)[:1000]}")
            page = 1
            while True:
                listing = client.get(
                    "/jobs", params={"status": "succeeded", "page_size": 200, "page": page}
                ).json()
                for job in listing["items"]:
                    fit = pending.pop(job["job_id"], None)
                    if fit is not None:
                        fit.job = job
                if page * 200 >= listing["total"] or not pending:
                    break
                page += 1
            if pending and time.monotonic() > deadline:
                left = f"{len(pending)} of {len(fits)}"
                raise TimeoutError(f"{left} jobs unfinished after {timeout} s")
            if pending:
                time.sleep(1)


def dagster_runs(dagster: Dagster) -> list[dict]:
    runs, cursor = [], None
    while True:
        batch = dagster.graphql(RUNS_QUERY, {"cursor": cursor})["runsOrError"]["results"]
        runs += batch
        if len(batch) < 500:
            return runs
        cursor = batch[-1]["runId"]


def pipeline_figures(fits: list[Fit], runs: list[dict]) -> dict:
    by_job = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        for job_id in filter(None, tags.get("adp/job_ids", "").split(",")):
            by_job[job_id] = run
    mine = {by_job[f.job_id]["runId"]: by_job[f.job_id] for f in fits if f.job_id in by_job}
    latency = [wall(f.job["finished_at"]) - f.accepted_at for f in fits]
    per_model = [wall(f.job["finished_at"]) - wall(f.job["started_at"]) for f in fits]
    pickup, start, in_run = [], [], []
    for f in fits:
        run = by_job.get(f.job_id)
        if run is None or run["startTime"] is None:
            continue
        pickup.append(run["creationTime"] - f.accepted_at)
        start.append(run["startTime"] - run["creationTime"])
        in_run.append(wall(f.job["finished_at"]) - run["startTime"])
    span = max(wall(f.job["finished_at"]) for f in fits) - min(f.posted_at for f in fits)
    return {
        "fit_to_registered_p50_s": pct(latency, 50),
        "fit_to_registered_p95_s": pct(latency, 95),
        "fit_to_registered_max_s": round(max(latency), 2),
        "fits_per_s": round(len(fits) / span, 3),
        "submit_s": round(max(f.accepted_at for f in fits) - min(f.posted_at for f in fits), 2),
        "accepted_to_run_created_p50_s": pct(pickup, 50),
        "run_created_to_started_p50_s": pct(start, 50),
        "run_started_to_job_done_p50_s": pct(in_run, 50),
        "model_in_run_p50_s": pct(per_model, 50),
        "runs": len(mine),
        "jobs_per_run": round(len(fits) / max(len(mine), 1), 1),
    }


def baseline(tracking_uri: str, fits: list[Fit]) -> dict:
    """The same N models trained by a plain loop, as a hand-rolled worker would."""
    import mlflow
    import mlflow.sklearn
    import polars as pl
    from mlflow import MlflowClient

    from core.contracts import TrainingConfig
    from core.naming import PRODUCTION_ALIAS, model_name
    from core.training import train
    from pipelines.training import pip_requirements

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = mlflow.set_experiment("bench-baseline").experiment_id
    requirements = pip_requirements()

    def one(fit: Fit) -> None:
        frame = pl.read_parquet(url2pathname(urlparse(fit.job["data_uri"]).path))
        result = train(frame, TrainingConfig.model_validate(fit.job["config"]))
        name = "baseline_" + model_name(fit.series_id)
        with mlflow.start_run(experiment_id=experiment_id, tags={"series_id": fit.series_id}):
            mlflow.log_params(result.params)
            mlflow.log_metrics(result.metrics)
            info = mlflow.sklearn.log_model(
                result.detector,
                name="model",
                signature=result.signature,
                input_example=result.input_example,
                pip_requirements=requirements,
                serialization_format="cloudpickle",
                registered_model_name=name,
                await_registration_for=30,
            )
        client.set_registered_model_alias(
            name, PRODUCTION_ALIAS, str(info.registered_model_version)
        )

    warm = Fit("warmup_" + fits[0].series_id, "", 0, 0, fits[0].job)
    one(warm)  # the first model pays MLflow's lazy imports, as the pipeline's warm-up did
    per_model = []
    begin = time.perf_counter()
    for fit in fits:
        t0 = time.perf_counter()
        one(fit)
        per_model.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - begin
    return {
        "baseline_fits_per_s": round(len(fits) / elapsed, 3),
        "baseline_model_p50_s": pct(per_model, 50),
    }


class Stack:
    """RabbitMQ, MLflow, the training API and Dagster, on this benchmark's own ports."""

    def __init__(self, work: Path, max_jobs_per_run: int, sensor_interval: int) -> None:
        (work / "state").mkdir()
        self.broker = RabbitMQ(work / "rabbitmq", AMQP_PORT, MGMT_PORT)
        self.mlflow = MlflowServer(work / "mlflow", MLFLOW_PORT)
        (work / "mlflow").mkdir()
        shared = {
            "RABBITMQ_URL": self.broker.url,
            "MLFLOW_TRACKING_URI": self.mlflow.url,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        self.api = TrainingApi(
            work / "state", API_PORT, {**shared, "LOG_LEVEL": "WARNING", "OUTBOX_POLL_S": "0.2"}
        )
        self.dagster = Dagster(
            work / "dagster_home",
            DAGSTER_PORT,
            {
                **shared,
                "STATE_DIR": str(work / "state"),
                "MAX_JOBS_PER_RUN": str(max_jobs_per_run),
                "SENSOR_INTERVAL_S": str(sensor_interval),
            },
        )

    def start(self) -> None:
        with ThreadPoolExecutor(2) as pool:
            for step in [pool.submit(self.broker.start), pool.submit(self.mlflow.start)]:
                step.result()
            for step in [pool.submit(self.api.start), pool.submit(self.dagster.start)]:
                step.result()

    def stop(self) -> None:
        for stop in (self.dagster.stop, self.api.stop, self.mlflow.stop, self.broker.stop):
            try:
                stop()
            except Exception as exc:  # stop the others whatever happens to one
                sys.stderr.write(f"stopping: {exc}\n")


def phase(stack: Stack, prefix: str, args: argparse.Namespace, rate: float) -> tuple[list, dict]:
    fits = asyncio.run(submit(stack.api.base_url, prefix, args.series, args.points, rate))
    wait_done(stack.api.base_url, fits, args.timeout)
    figures = pipeline_figures(fits, dagster_runs(stack.dagster))
    figures["submission"] = f"steady {rate}/s" if rate > 0 else "all at once"
    return fits, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100, help="fits (one series each)")
    parser.add_argument("--points", type=int, default=10_000, help="points per fit")
    parser.add_argument("--rate", type=float, default=0, help="fits/s; 0: all at once")
    parser.add_argument(
        "--steady-rate", type=float, default=0.47, help="second set at this pace; 0: skip it"
    )
    parser.add_argument("--max-jobs-per-run", type=int, default=50, help="MAX_JOBS_PER_RUN")
    parser.add_argument("--sensor-interval", type=int, default=3, help="SENSOR_INTERVAL_S")
    parser.add_argument("--timeout", type=float, default=1800, help="per set of fits, s")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adp-bench-training-"))
    work.chmod(0o755)  # the RabbitMQ node runs as its own user
    stack = Stack(work, args.max_jobs_per_run, args.sensor_interval)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # keep stdout to the table
    try:
        started = time.perf_counter()
        stack.start()
        warmup = asyncio.run(submit(stack.api.base_url, "bench_warmup", 1, args.points, 0))
        wait_done(stack.api.base_url, warmup, 600)
        setup_s = time.perf_counter() - started
        fits, result = phase(stack, "bench_burst", args, args.rate)
        if args.steady_rate > 0:
            _, steady = phase(stack, "bench_steady", args, args.steady_rate)
            result |= {f"steady_{k}": v for k, v in steady.items() if k != "submission"}
            result["steady_submission"] = steady["submission"]
        result |= baseline(stack.mlflow.url, fits)
    finally:
        stack.stop()
        if args.keep:
            sys.stderr.write(f"work folder kept: {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result |= {
        "orchestration_overhead": round(result["baseline_fits_per_s"] / result["fits_per_s"], 2),
        "series": args.series,
        "points": args.points,
        "max_jobs_per_run": args.max_jobs_per_run,
        "sensor_interval_s": args.sensor_interval,
        "setup_s": round(setup_s, 1),
        "targets_met": result["fit_to_registered_p50_s"] <= TARGET_P50_S
        and result["fits_per_s"] >= TARGET_FITS_PER_S,
    }
    report(result)


def report(result: dict) -> None:
    rows = [
        ("fits submitted", "series", ""),
        ("submission", "submission", ""),
        ("time to submit all", "submit_s", "s"),
        ("fit → registered p50", "fit_to_registered_p50_s", f"s   (target ≤ {TARGET_P50_S:g})"),
        ("fit → registered p95", "fit_to_registered_p95_s", "s"),
        ("fit → registered max", "fit_to_registered_max_s", "s"),
        ("  202 → run created p50", "accepted_to_run_created_p50_s", "s   (sensor pickup)"),
        ("  run created → started p50", "run_created_to_started_p50_s", "s   (queue, imports)"),
        ("  run started → job done p50", "run_started_to_job_done_p50_s", "s   (batch)"),
        ("one model inside a run p50", "model_in_run_p50_s", "s   (job started → done)"),
        ("Dagster runs / jobs per run", "runs", ""),
        ("pipeline fits/s", "fits_per_s", f"    (target ≥ {TARGET_FITS_PER_S:g})"),
        ("baseline fits/s (plain loop)", "baseline_fits_per_s", ""),
        ("baseline per model p50", "baseline_model_p50_s", "s"),
        ("orchestration overhead", "orchestration_overhead", "×  (baseline / pipeline)"),
    ]
    lines = []
    for label, key, unit in rows:
        value = result.get(key)
        if key == "runs":
            value = f"{result['runs']} / {result['jobs_per_run']}"
        lines.append(f"{label:34s} {value}{unit}")
    if "steady_fits_per_s" in result:
        lines.append(f"{'steady set':34s} {result['steady_submission']}")
        for label, key in [
            ("  fit → registered p50", "steady_fit_to_registered_p50_s"),
            ("  fit → registered p95", "steady_fit_to_registered_p95_s"),
            ("  202 → run created p50", "steady_accepted_to_run_created_p50_s"),
            ("  run created → started p50", "steady_run_created_to_started_p50_s"),
            ("  Dagster runs", "steady_runs"),
            ("  fits/s (bounded by the pace)", "steady_fits_per_s"),
        ]:
            lines.append(f"{label:34s} {result[key]}")
    lines.append(f"{'targets met':34s} {result['targets_met']}")
    print("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
