"""Dagster resources around the external systems: job store, training data, broker, MLflow.

Connection settings come from the environment when a resource is first used in a run or a
tick (never at import), through the shared settings; a field set explicitly wins.
"""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from core.jobstore import JobStore
from core.settings import Settings, get_settings
from core.storage import TrainingDataStore, data_store
from pipelines.broker import Broker
from pipelines.registry import Registry


class _FromSettings(dg.ConfigurableResource):
    @property
    def settings(self) -> Settings:
        return get_settings()


class JobStoreResource(_FromSettings):
    """The training API's job store: the pipeline moves jobs through their states."""

    url: str = ""

    @cached_property
    def store(self) -> JobStore:
        store = JobStore(self.url or self.settings.resolved_job_store_url)
        store.create_schema()
        return store


class TrainingDataResource(_FromSettings):
    """Where the API stored each fit's Parquet file (local folder or s3://)."""

    root: str = ""

    @cached_property
    def store(self) -> TrainingDataStore:
        return data_store(
            self.root or self.settings.resolved_data_root, self.settings.s3_endpoint_url
        )


class BrokerResource(_FromSettings):
    """RabbitMQ: the queue sensor reads job messages, runs publish training events."""

    url: str = ""

    @cached_property
    def broker(self) -> Broker:
        return Broker(self.url or self.settings.rabbitmq_url, self.settings.publish_timeout_s)


class MlflowResource(_FromSettings):
    """The MLflow tracking server and model registry."""

    tracking_uri: str = ""

    @cached_property
    def registry(self) -> Registry:
        return Registry(
            self.tracking_uri or self.settings.mlflow_tracking_uri,
            self.settings.model_retention,
            self.settings.new_version_alias,
        )
