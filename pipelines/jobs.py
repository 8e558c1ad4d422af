"""Runs of the pipeline.

`train_models` trains a batch of API jobs (or stale series) in one run: starting a run
costs seconds of imports, so one run per model cannot keep up with the fleet (see
docs/scaling.md). Each model is still its own MLflow run, registered version, job-row
update, event and `anomaly_model` partition materialization with its checks. Series are
trained on `TRAINING_THREADS` threads: most of a model's time is waiting for MLflow.
"""

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import dagster as dg
from pydantic import Field
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from core.contracts import TrainingConfig
from core.errors import RegistryUnavailable
from core.jobstore import Job as JobRow
from core.jobstore import JobStore
from core.settings import get_settings
from pipelines import lifecycle
from pipelines.assets import MODEL_KEY, anomaly_model, materialization_metadata
from pipelines.resources import (
    BrokerResource,
    JobStoreResource,
    MlflowResource,
    TrainingDataResource,
)
from pipelines.training import Trained, train_series

JOB_IDS_TAG = "adp/job_ids"
PRIORITY_TAG = "adp/priority"


class TrainModelsConfig(dg.Config):
    job_ids: list[str] = Field(
        default_factory=list, description="Training API jobs to train, in order."
    )
    series_ids: list[str] = Field(
        default_factory=list, description="Series to retrain with their latest config."
    )


def _with_retries(fn):
    attempts = get_settings().training_retries + 1
    return retry(
        retry=retry_if_exception_type(RegistryUnavailable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=2, max=30),
        reraise=True,
    )(fn)


@dataclass
class _Outcome:
    series_id: str
    job: JobRow | None
    algorithm: str = ""
    trained: Trained | None = None
    error: Exception | None = None
    skipped: str = ""  # the status that made a job not trainable any more


def _train_series_jobs(
    series_id: str, jobs: list[JobRow | None], store: JobStore, data, registry, run_id: str
) -> list[_Outcome]:
    """One series' jobs, in order (never two of a series at once: versions must not race)."""
    train = _with_retries(train_series)
    outcomes = []
    for job in jobs:
        if job is not None and not store.mark_running(job.job_id, run_id):
            outcomes.append(_Outcome(series_id, job, skipped=store.get(job.job_id).status))
            continue
        if job is not None:
            cfg = TrainingConfig.model_validate(job.config)
        else:
            latest = store.latest_for_series(series_id)
            cfg = TrainingConfig.model_validate(latest.config) if latest else TrainingConfig()
        outcome = _Outcome(series_id, job, cfg.algorithm.value)
        try:
            outcome.trained = train(
                series_id, cfg, data, registry, job.job_id if job else None, run_id
            )
        except Exception as exc:  # one bad series must not stop the batch
            outcome.error = exc
        outcomes.append(outcome)
    return outcomes


@dg.op(description="Train, register and promote one model per job or series.")
def train_models(
    context: dg.OpExecutionContext,
    config: TrainModelsConfig,
    jobs: JobStoreResource,
    data: TrainingDataResource,
    mlflow: MlflowResource,
    broker: BrokerResource,
) -> None:
    store, events = jobs.store, broker.broker
    rows = store.get_many(config.job_ids)
    work: dict[str, list[JobRow | None]] = {}
    for job_id in config.job_ids:
        if job_id in rows:
            work.setdefault(rows[job_id].series_id, []).append(rows[job_id])
    for series_id in config.series_ids:
        work.setdefault(series_id, []).append(None)
    # Threads overlap one model's MLflow round trips with another's CPU work; Dagster
    # events and job-row outcomes are written here, on the op's own thread.
    failures = []
    threads = min(get_settings().training_threads, max(len(work), 1))
    with ThreadPoolExecutor(threads, thread_name_prefix="train") as pool:
        futures = [
            pool.submit(
                _train_series_jobs, s, js, store, data.store, mlflow.registry, context.run_id
            )
            for s, js in work.items()
        ]
        for future in as_completed(futures):
            for outcome in future.result():
                failure = _report(context, store, events, outcome)
                if failure:
                    failures.append(failure)
    if failures:
        raise dg.Failure(
            f"{len(failures)} of {sum(map(len, work.values()))} model(s) failed",
            metadata={"failures": dg.MetadataValue.json(failures)},
            allow_retries=False,
        )


def _report(context: dg.OpExecutionContext, store: JobStore, events, o: _Outcome) -> dict | None:
    job_id = o.job.job_id if o.job else None
    if o.skipped:
        context.log.info(f"job {job_id} is {o.skipped}; skipped")
        return None
    if o.error is not None:
        code = lifecycle.error_code(o.error)
        context.log.error(f"{o.series_id}: training failed ({code}): {o.error}")
        if o.job is not None:
            lifecycle.failed(store, events, [o.job], code, str(o.error))
        return {"series_id": o.series_id, "code": code, "reason": str(o.error)[:300]}
    trained = o.trained
    lifecycle.succeeded(store, events, job_id, trained, o.algorithm)
    context.log_event(
        dg.AssetMaterialization(
            asset_key=MODEL_KEY,
            partition=o.series_id,
            metadata={**materialization_metadata(trained), "job_id": job_id or ""},
        )
    )
    for check in trained.checks:
        context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=MODEL_KEY,
                check_name=check.name,
                passed=check.passed,
                metadata=check.metadata,
                severity=dg.AssetCheckSeverity(check.severity),
                description=check.description,
                partition=o.series_id,
            )
        )
    return None


@dg.job(
    description="Batch training requested by the queue sensor and the schedule.",
    tags={"adp/kind": "training"},
)
def train_models_job() -> None:
    train_models()


anomaly_model_job = dg.define_asset_job(
    "anomaly_model_job",
    selection=[anomaly_model],
    description="Materialize anomaly_model partitions (reruns from the UI).",
)
