"""Contracts between the processes: the job message, the events and the error body.

The API, the Dagster sensor and serving import these models; nothing else defines them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.naming import require_series_id

SCHEMA_VERSION = 1

SeriesId = Annotated[str, AfterValidator(require_series_id)]


class Algorithm(StrEnum):
    STATISTICAL = "statistical"  # mean/std z-score
    ROBUST = "robust"  # median/MAD z-score
    ISOLATION_FOREST = "isolation_forest"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatisticalParams(_Params):
    threshold_sigma: float = Field(3.0, gt=0, le=50, description="Anomaly beyond this z-score.")


class RobustParams(_Params):
    threshold_sigma: float = Field(
        3.5, gt=0, le=50, description="Anomaly beyond this robust z-score (MAD scaled to sigma)."
    )


class IsolationForestParams(_Params):
    n_estimators: int = Field(100, ge=10, le=1000)
    contamination: float = Field(0.01, gt=0, le=0.5, description="Expected anomaly share.")
    max_samples: int = Field(256, ge=16, le=100_000)
    random_state: int = Field(0, ge=0)


HYPERPARAMETERS: dict[Algorithm, type[_Params]] = {
    Algorithm.STATISTICAL: StatisticalParams,
    Algorithm.ROBUST: RobustParams,
    Algorithm.ISOLATION_FOREST: IsolationForestParams,
}


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Algorithm = Algorithm.STATISTICAL
    window_hours: int = Field(168, ge=24, le=168, description="Training window, hours.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Per algorithm; unknown keys are rejected."
    )

    @model_validator(mode="after")
    def _complete_hyperparameters(self) -> TrainingConfig:
        # Validated and completed with defaults, so the message says exactly what trains.
        params = HYPERPARAMETERS[self.algorithm].model_validate(self.hyperparameters)
        self.hyperparameters = params.model_dump()
        return self


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class JobMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    triggered_by: str = Field("api", max_length=128)
    description: str = Field("", max_length=1024)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=32)
    priority: Priority = Priority.NORMAL


class TrainingData(BaseModel):
    """Documents the wire form; the API parses it straight into arrays."""

    timestamps: list[int] = Field(description="Unix seconds, strictly increasing.")
    values: list[float] = Field(description="Finite values, one per timestamp.")


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_data: TrainingData
    config: TrainingConfig = Field(default_factory=TrainingConfig)
    metadata: JobMetadata = Field(default_factory=JobMetadata)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobMessage(BaseModel):
    """What goes on `training-jobs`: a claim check pointing at the stored data."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: UUID
    series_id: SeriesId
    data_uri: str
    points: int = Field(ge=1)
    data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    config: TrainingConfig
    metadata: JobMetadata
    submitted_at: datetime


class TrainingEvent(BaseModel):
    """Published on `training.completed.{series_id}` or `training.failed.{series_id}`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event: Literal["completed", "failed"]
    job_id: UUID | None
    series_id: SeriesId
    model_name: str
    version: int | None = None
    run_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    time: datetime = Field(default_factory=utcnow)


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorMetadata(BaseModel):
    request_id: str | None = None


class ErrorBody(BaseModel):
    status: Literal["error"] = "error"
    error: ErrorInfo
    metadata: ErrorMetadata = Field(default_factory=ErrorMetadata)
