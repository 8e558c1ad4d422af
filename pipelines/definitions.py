"""The Dagster code location `pipelines` (loaded by workspace.yaml)."""

import dagster as dg

from pipelines.assets import anomaly_model, training_data
from pipelines.executors import build_executor
from pipelines.jobs import anomaly_model_job, train_models_job
from pipelines.resources import (
    BrokerResource,
    JobStoreResource,
    MlflowResource,
    TrainingDataResource,
)
from pipelines.schedules import retrain_models
from pipelines.sensors import training_jobs_sensor, training_run_canceled, training_run_failed

defs = dg.Definitions(
    assets=[training_data, anomaly_model],
    jobs=[train_models_job, anomaly_model_job],
    sensors=[training_jobs_sensor, training_run_failed, training_run_canceled],
    schedules=[retrain_models],
    resources={
        "jobs": JobStoreResource(),
        "data": TrainingDataResource(),
        "mlflow": MlflowResource(),
        "broker": BrokerResource(),
    },
    executor=build_executor(),
)
