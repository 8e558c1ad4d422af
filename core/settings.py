"""Settings of every process, read from environment variables (documented in the README).

One class, so the API, the pipelines and serving agree on where the shared things are.
Values are validated when the settings are built: a bad value fails the start, not a request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    state_dir: Path = Field(Path(".state"), description="Folder for all local state.")
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/", description="AMQP URL of the broker."
    )
    job_store_url: str = Field(
        "", description="SQLAlchemy URL of the job store; default SQLite in STATE_DIR."
    )
    data_root: str = Field(
        "",
        description="Training-data root: a folder or s3://bucket/prefix; default STATE_DIR/data.",
    )
    s3_endpoint_url: str = Field("", description="S3 endpoint (MinIO) for an s3:// DATA_ROOT.")
    mlflow_tracking_uri: str = Field("http://127.0.0.1:5000", description="MLflow server.")

    api_host: str = Field("127.0.0.1", description="Training API bind address.")
    api_port: int = Field(8030, description="Training API port.")
    fit_rate_limit: str = Field("5/minute", description="Fits allowed per series_id.")
    rate_limit_storage_uri: str = Field(
        "memory://", description="Rate-limit storage (limits library URI, e.g. redis://...)."
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest fit body.")
    publish_timeout_s: float = Field(5.0, gt=0, description="Wait for a broker confirm.")
    outbox_poll_s: float = Field(1.0, gt=0, description="Relay poll interval when idle.")
    outbox_batch: int = Field(200, ge=1, description="Outbox rows published per batch.")
    log_level: str = Field("INFO", description="Log level of every process.")

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def resolved_job_store_url(self) -> str:
        return self.job_store_url or f"sqlite:///{self.resolved_state_dir / 'jobs.db'}"

    @property
    def resolved_data_root(self) -> str:
        return self.data_root or str(self.resolved_state_dir / "data")


@lru_cache
def get_settings() -> Settings:
    return Settings()
