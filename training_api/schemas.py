"""Response bodies of the training API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from core.contracts import JobStatus
from core.jobstore import Job


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything is stored in UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class FitAccepted(BaseModel):
    job_id: str
    series_id: str
    status: JobStatus
    status_url: str
    deduplicated: bool = Field(
        description="True when an existing job with the same data or idempotency key is returned."
    )


class JobError(BaseModel):
    code: str
    message: str | None


class JobView(BaseModel):
    job_id: str
    series_id: str
    status: JobStatus
    points: int
    data_sha256: str
    data_uri: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model_version: int | None
    run_id: str | None
    dagster_run_id: str | None
    error: JobError | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            job_id=job.job_id,
            series_id=job.series_id,
            status=JobStatus(job.status),
            points=job.points,
            data_sha256=job.data_sha256,
            data_uri=job.data_uri,
            config=job.config,
            metadata=job.job_metadata,
            created_at=_utc(job.created_at),
            updated_at=_utc(job.updated_at),
            started_at=_utc(job.started_at),
            finished_at=_utc(job.finished_at),
            model_version=job.model_version,
            run_id=job.run_id,
            dagster_run_id=job.dagster_run_id,
            error=JobError(code=job.error_code, message=job.error_message)
            if job.error_code
            else None,
        )


class JobPage(BaseModel):
    items: list[JobView]
    page: int
    page_size: int
    total: int


class Health(BaseModel):
    status: str = Field(description="ok, degraded (broker down: fits still accepted) or down")
    uptime_s: float
    job_store: bool
    broker: bool
    outbox_backlog: int | None
    relay_error: str | None = None
