"""The per-series assets: `training_data` (recorded by the sensor) → `anomaly_model`.

`anomaly_model` is what the UI shows, reruns and the schedule's single-partition runs
materialize; the sensor's batch runs (jobs.py) record the same asset partitions and checks.
"""

import dagster as dg

from core.contracts import TrainingConfig
from pipelines import lifecycle
from pipelines.partitions import series_partitions
from pipelines.resources import (
    BrokerResource,
    JobStoreResource,
    MlflowResource,
    TrainingDataResource,
)
from pipelines.training import Trained, train_series

training_data = dg.AssetSpec(
    "training_data",
    partitions_def=series_partitions,
    description="The Parquet files the training API stored for a series (one per accepted "
    "fit). Recorded by the queue sensor with the data URI, rows, time range and SHA-256.",
    kinds={"parquet"},
    group_name="anomaly_detection",
)

CHECKS = {
    "training_data_valid": "The training set passes the shared validation rules.",
    "model_loads_and_predicts": "The registered model loads back and predicts its example.",
    "anomaly_rate_plausible": "The anomaly rate on the training data suits the algorithm.",
}
MODEL_KEY = dg.AssetKey("anomaly_model")

# MLflow being unreachable is transient: retried with growing, jittered delays.
TRAINING_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def materialization_metadata(trained: Trained) -> dict:
    return {
        "version": trained.version,
        "run_id": trained.run_id or "",
        "model_uri": trained.model_uri,
        "new_version": trained.new_version,
        **trained.data,
        **{k: float(v) for k, v in trained.metrics.items()},
    }


@dg.asset(
    key=MODEL_KEY,
    partitions_def=series_partitions,
    deps=[training_data],
    check_specs=[
        dg.AssetCheckSpec(name, asset=MODEL_KEY, description=text) for name, text in CHECKS.items()
    ],
    retry_policy=TRAINING_RETRY,
    kinds={"mlflow", "scikitlearn"},
    group_name="anomaly_detection",
    description="The series' anomaly model, registered as model_od_{series_id} in MLflow "
    "with the production alias on the newest good version.",
)
def anomaly_model(
    context: dg.AssetExecutionContext,
    jobs: JobStoreResource,
    data: TrainingDataResource,
    mlflow: MlflowResource,
    broker: BrokerResource,
) -> dg.MaterializeResult:
    series_id = context.partition_key
    latest = jobs.store.latest_for_series(series_id)
    # A rerun needs no run config: it trains with the series' latest submitted config.
    config = TrainingConfig.model_validate(latest.config) if latest else TrainingConfig()
    trained = train_series(series_id, config, data.store, mlflow.registry, None, context.run_id)
    lifecycle.succeeded(jobs.store, broker.broker, None, trained, config.algorithm.value)
    return dg.MaterializeResult(
        metadata=materialization_metadata(trained),
        check_results=[
            dg.AssetCheckResult(
                check_name=c.name,
                passed=c.passed,
                metadata=c.metadata,
                severity=dg.AssetCheckSeverity(c.severity),
                description=c.description,
            )
            for c in trained.checks
        ],
    )
