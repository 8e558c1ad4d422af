"""Runs of the pipeline.

`train_models` trains a batch of API jobs (or stale series) in one run: starting a run
costs seconds of imports, so one run per model cannot keep up with the fleet (see
docs/scaling.md). Each model is still its own MLflow run, registered version, job-row
update, event and `anomaly_model` partition materialization with its checks.
"""

import dagster as dg
from pydantic import Field
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from core.contracts import TrainingConfig
from core.errors import RegistryUnavailable
from core.settings import get_settings
from pipelines import lifecycle
from pipelines.assets import MODEL_KEY, anomaly_model, materialization_metadata
from pipelines.resources import (
    BrokerResource,
    JobStoreResource,
    MlflowResource,
    TrainingDataResource,
)
from pipelines.training import train_series

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
    work = [(rows[j].series_id, rows[j]) for j in config.job_ids if j in rows]
    work += [(s, None) for s in config.series_ids]
    failures = []
    train = _with_retries(train_series)
    for series_id, job in work:
        if job is not None and not store.mark_running(job.job_id, context.run_id):
            context.log.info("job %s is %s; skipped", job.job_id, store.get(job.job_id).status)
            continue
        if job is not None:
            cfg = TrainingConfig.model_validate(job.config)
        else:
            latest = store.latest_for_series(series_id)
            cfg = TrainingConfig.model_validate(latest.config) if latest else TrainingConfig()
        try:
            trained = train(
                series_id,
                cfg,
                data.store,
                mlflow.registry,
                job.job_id if job else None,
                context.run_id,
            )
        except Exception as exc:  # one bad series must not stop the batch
            code = lifecycle.error_code(exc)
            context.log.error(f"{series_id}: training failed ({code}): {exc}")
            if job is not None:
                lifecycle.failed(store, events, [job], code, str(exc))
            failures.append({"series_id": series_id, "code": code, "reason": str(exc)[:300]})
            continue
        lifecycle.succeeded(
            store, events, job.job_id if job else None, trained, cfg.algorithm.value
        )
        context.log_event(
            dg.AssetMaterialization(
                asset_key=MODEL_KEY,
                partition=series_id,
                metadata={**materialization_metadata(trained), "job_id": job.job_id if job else ""},
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
                    partition=series_id,
                )
            )
    if failures:
        raise dg.Failure(
            f"{len(failures)} of {len(work)} model(s) failed",
            metadata={"failures": dg.MetadataValue.json(failures)},
            allow_retries=False,
        )


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
