"""Response bodies of model management: the catalog, versions, promotions, shadows."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from core.shadows import ShadowEvaluation, decide
from training_api.schemas import _utc

KEY_METRICS = ("points", "anomaly_rate", "threshold", "expected_low", "expected_high", "mean",
               "std", "median")


class SeriesView(BaseModel):
    series_id: str
    model: str
    production_version: int | None
    shadow_version: int | None
    versions_kept: int
    algorithm: str
    last_trained: datetime
    last_data_timestamp: int


class SeriesPage(BaseModel):
    items: list[SeriesView]
    page: int
    page_size: int
    total: int


class VersionView(BaseModel):
    version: int
    created_at: datetime
    alias: str | None = Field(description="production, shadow or none")
    aliases: list[str]
    algorithm: str | None
    metrics: dict[str, float] = Field(description="Key metrics of the training run.")
    job_id: str | None
    data_sha256: str | None
    run_id: str | None
    run_url: str | None = Field(description="The training run in the MLflow UI.")
    promoted_by: str | None
    promoted_at: str | None


class VersionList(BaseModel):
    series_id: str
    model: str
    production_version: int | None
    shadow_version: int | None
    versions: list[VersionView]


class Promotion(BaseModel):
    series_id: str
    model: str
    version: int
    previous_version: int | None
    changed: bool = Field(description="False when the version already was in production.")
    promoted_by: str
    promoted_at: datetime
    serving_notified: bool = Field(
        description="The completion event reached the broker (serving switches within seconds);"
        " when false, serving picks the version up at its cache TTL."
    )


class ShadowView(BaseModel):
    series_id: str
    version: int
    production_version: int
    status: str = Field(description="evaluating, deciding, promoted, dropped, stopped, replaced")
    started_by: str
    started_at: datetime
    decided_at: datetime | None
    reason: str | None
    points: int
    agreements: int
    agreement_rate: float | None
    requests: int
    production_latency_ms: float | None = Field(description="Mean scoring time per request.")
    shadow_latency_ms: float | None = Field(description="Mean scoring time per request.")
    min_points: int
    min_agreement: float
    outlook: str | None = Field(
        description="What the counts so far would decide: promote, drop, or null (too few)."
    )

    @classmethod
    def of(cls, e: ShadowEvaluation, min_points: int, min_agreement: float) -> ShadowView:
        def mean_ms(total_s: float) -> float | None:
            return round(total_s / e.requests * 1000, 4) if e.requests else None

        return cls(
            series_id=e.series_id, version=e.version, production_version=e.production_version,
            status=e.status, started_by=e.started_by, started_at=_utc(e.started_at),
            decided_at=_utc(e.decided_at), reason=e.reason, points=e.points,
            agreements=e.agreements,
            agreement_rate=round(e.agreements / e.points, 6) if e.points else None,
            requests=e.requests, production_latency_ms=mean_ms(e.production_seconds),
            shadow_latency_ms=mean_ms(e.shadow_seconds), min_points=min_points,
            min_agreement=min_agreement,
            outlook=decide(e.points, e.agreements, 1, min_agreement) if e.points else None,
        )


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
