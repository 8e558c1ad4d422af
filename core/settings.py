"""Settings of every process, read from environment variables (documented in the README).

One class, so the API, the pipelines and serving agree on where the shared things are.
Values are validated when the settings are built: a bad value fails the start, not a request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public-key algorithms only: with HS256 the verifying key would also be a signing key.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


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
    body_read_timeout_s: float = Field(
        30, gt=0, description="A request body must arrive within this; else 408 (slow clients)."
    )
    publish_timeout_s: float = Field(5.0, gt=0, description="Wait for a broker confirm.")
    outbox_poll_s: float = Field(1.0, gt=0, description="Relay poll interval when idle.")
    outbox_batch: int = Field(200, ge=1, description="Outbox rows published per batch.")
    log_level: str = Field("INFO", description="Log level of every process.")

    sensor_interval_s: int = Field(3, ge=1, description="Queue sensor tick interval.")
    sensor_max_messages: int = Field(200, ge=1, description="Messages read per sensor tick.")
    max_jobs_per_run: int = Field(
        50, ge=1, le=500, description="Jobs trained by one Dagster run (1: a run per job)."
    )
    training_threads: int = Field(
        3, ge=1, le=32, description="Series a training run trains at once (threads)."
    )
    model_retention: int = Field(10, ge=1, description="Model versions kept per series.")
    retrain_cron: str = Field("0 3 * * 0", description="When the retraining schedule runs.")
    retrain_max_age_hours: float = Field(
        168, gt=0, description="The schedule retrains models older than this."
    )
    serve_host: str = Field("127.0.0.1", description="Ray Serve HTTP address.")
    serve_port: int = Field(8000, description="Ray Serve HTTP port.")
    serve_replicas: int = Field(1, ge=1, description="Predictor replicas.")
    cache_capacity: int = Field(50, ge=1, description="Models kept per replica.")
    cache_ttl_s: float = Field(7200, gt=0, description="A cached model is reloaded after this.")
    cache_max_bytes: int = Field(0, ge=0, description="Memory budget of the cache (0: none).")
    negative_cache_ttl_s: float = Field(
        30, ge=0, description="How long 'this series has no model' is remembered."
    )
    breaker_failures: int = Field(3, ge=1, description="Registry failures that open the breaker.")
    breaker_reset_s: float = Field(30, gt=0, description="Open breaker waits this long.")
    registry_timeout_s: float = Field(2, gt=0, description="Timeout of one registry call.")
    model_dir: str = Field("", description="Local model copies; default STATE_DIR/models.")
    warmup_models: int = Field(20, ge=0, description="Models loaded when a replica starts.")

    retrain_max_series: int = Field(
        300_000, ge=1, description="Series the schedule retrains per tick at most."
    )
    training_retries: int = Field(
        3, ge=0, description="Retries of a training step after a transient error (MLflow down)."
    )

    mlflow_ui_url: str = Field(
        "", description="MLflow UI address for run links; default MLFLOW_TRACKING_URI."
    )
    audit_log: str = Field(
        "", description="Model-management audit log (JSON lines); default STATE_DIR/audit.jsonl."
    )
    new_version_alias: Literal["production", "shadow"] = Field(
        "production", description="Alias a newly trained version gets (shadow: evaluated first)."
    )
    shadow_min_points: int = Field(
        1000, ge=1, description="Points a shadow is scored on before it is promoted or dropped."
    )
    shadow_min_agreement: float = Field(
        0.95, gt=0, le=1, description="Agreement with production that promotes a shadow."
    )
    shadow_sync_s: float = Field(
        1.0, gt=0, description="How often shadow counts are written, read and decided on."
    )
    auth_enabled: bool = Field(False, description="Require a verified Bearer JWT (core/auth.py).")
    auth_jwks_url: str = Field("", description="JWKS URL of the identity provider.")
    auth_public_key: str = Field(
        "", description="Static public key (PEM text or a PEM file path) instead of a JWKS URL."
    )
    auth_issuer: str = Field("", description="Required `iss` of tokens.")
    auth_audience: str = Field("", description="Required `aud` of tokens.")
    auth_roles_claim: str = Field(
        "roles", description="Claim with the roles (a list; dots reach into nested claims)."
    )
    auth_algorithms: str = Field(
        "RS256", description="Accepted token signature algorithms, comma-separated."
    )

    @model_validator(mode="after")
    def _auth_is_complete(self) -> Settings:
        """Auth on with half a configuration fails the start, not every request."""
        if not self.auth_enabled:
            return self
        if bool(self.auth_jwks_url) == bool(self.auth_public_key):
            raise ValueError("AUTH_ENABLED needs exactly one of AUTH_JWKS_URL, AUTH_PUBLIC_KEY")
        if not (self.auth_issuer and self.auth_audience):
            raise ValueError("AUTH_ENABLED needs AUTH_ISSUER and AUTH_AUDIENCE")
        unsafe = set(self.auth_algorithm_list) - ASYMMETRIC_ALGORITHMS
        if unsafe or not self.auth_algorithm_list:
            raise ValueError(
                f"AUTH_ALGORITHMS must be among {sorted(ASYMMETRIC_ALGORITHMS)}; got {unsafe}"
            )
        return self

    @property
    def auth_algorithm_list(self) -> list[str]:
        return [a.strip() for a in self.auth_algorithms.split(",") if a.strip()]

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def resolved_job_store_url(self) -> str:
        return self.job_store_url or f"sqlite:///{self.resolved_state_dir / 'jobs.db'}"

    @property
    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir else self.resolved_state_dir / "models"

    @property
    def resolved_data_root(self) -> str:
        return self.data_root or str(self.resolved_state_dir / "data")

    @property
    def resolved_audit_log(self) -> Path:
        return Path(self.audit_log) if self.audit_log else self.resolved_state_dir / "audit.jsonl"

    @property
    def resolved_mlflow_ui_url(self) -> str:
        return (self.mlflow_ui_url or self.mlflow_tracking_uri).rstrip("/")


@lru_cache
def get_settings() -> Settings:
    return Settings()
