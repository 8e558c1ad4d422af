"""Shadow evaluations: a candidate version scored beside production on live traffic.

Serving replicas add their counts to one row per evaluation in the job store, so every
replica's traffic counts and the training API, which decides, reads the totals. One
evaluation per series is open at a time (a partial unique index, as for active jobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Float, Index, Integer, String, Text, select, text, update
from sqlalchemy.orm import Mapped, mapped_column

from core.contracts import utcnow
from core.jobstore import Base, JobStore

OPEN = ("evaluating", "deciding")  # serving scores and counts in both
_OPEN_SQL = "status IN ('evaluating', 'deciding')"
Decision = Literal["promote", "drop"]


class ShadowEvaluation(Base):
    __tablename__ = "shadow_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    production_version: Mapped[int]
    # evaluating → deciding → promoted | dropped; or stopped (by hand) | replaced (new shadow)
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    points: Mapped[int] = mapped_column(Integer, default=0)
    agreements: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    production_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    shadow_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (
        Index(
            "one_open_shadow_per_series",
            "series_id",
            unique=True,
            sqlite_where=text(_OPEN_SQL),
            postgresql_where=text(_OPEN_SQL),
        ),
    )


@dataclass
class ShadowCounts:
    """What a replica scored since its last flush, for one (series, shadow version)."""

    points: int = 0
    agreements: int = 0
    requests: int = 0
    production_seconds: float = 0.0
    shadow_seconds: float = 0.0

    def add(self, points: int, agreements: int, production_s: float, shadow_s: float) -> None:
        self.points += points
        self.agreements += agreements
        self.requests += 1
        self.production_seconds += production_s
        self.shadow_seconds += shadow_s

    def merge(self, other: ShadowCounts) -> None:
        self.points += other.points
        self.agreements += other.agreements
        self.requests += other.requests
        self.production_seconds += other.production_seconds
        self.shadow_seconds += other.shadow_seconds


def decide(points: int, agreements: int, min_points: int, min_agreement: float) -> Decision | None:
    """Promote at `min_agreement` or more over at least `min_points`, drop below; wait before."""
    if points < min_points:
        return None
    return "promote" if agreements >= min_agreement * points else "drop"


class ShadowStore:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def create_schema(self) -> None:
        ShadowEvaluation.__table__.create(self.jobs.engine, checkfirst=True)

    def start(self, series_id: str, version: int, production_version: int, actor: str) -> int:
        """Open an evaluation; one still open for the series is closed as `replaced`."""
        with self.jobs.session() as s:
            self._close(s, series_id, "replaced", f"replaced by version {version}")
            s.flush()
            row = ShadowEvaluation(
                series_id=series_id, version=version, production_version=production_version,
                status="evaluating", started_by=actor, started_at=utcnow(), points=0,
                agreements=0, requests=0, production_seconds=0.0, shadow_seconds=0.0,
            )
            s.add(row)
            s.flush()
            return row.id

    def stop(self, series_id: str, status: str, reason: str) -> bool:
        with self.jobs.session() as s:
            return self._close(s, series_id, status, reason)

    @staticmethod
    def _close(session, series_id: str, status: str, reason: str) -> bool:
        done = session.execute(
            update(ShadowEvaluation)
            .where(ShadowEvaluation.series_id == series_id, ShadowEvaluation.status.in_(OPEN))
            .values(status=status, reason=reason, decided_at=utcnow())
        )
        return bool(done.rowcount)

    def open_versions(self) -> dict[str, int]:
        """{series_id: shadow version} of the open evaluations (what serving scores)."""
        with self.jobs.session() as s:
            rows = s.execute(
                select(ShadowEvaluation.series_id, ShadowEvaluation.version).where(
                    ShadowEvaluation.status.in_(OPEN)
                )
            ).all()
        return {series_id: version for series_id, version in rows}

    def add_counts(self, counts: Iterable[tuple[str, int, ShadowCounts]]) -> None:
        """Add a replica's counts to the open evaluations, in one transaction."""
        with self.jobs.session() as s:
            for series_id, version, c in counts:
                e = ShadowEvaluation
                s.execute(
                    update(e)
                    .where(e.series_id == series_id, e.version == version, e.status.in_(OPEN))
                    .values(
                        points=e.points + c.points,
                        agreements=e.agreements + c.agreements,
                        requests=e.requests + c.requests,
                        production_seconds=e.production_seconds + c.production_seconds,
                        shadow_seconds=e.shadow_seconds + c.shadow_seconds,
                    )
                )

    def ready(self, min_points: int) -> Sequence[ShadowEvaluation]:
        with self.jobs.session() as s:
            return s.scalars(
                select(ShadowEvaluation).where(
                    ShadowEvaluation.status == "evaluating", ShadowEvaluation.points >= min_points
                )
            ).all()

    def move(self, evaluation_id: int, old: str, new: str, reason: str | None = None) -> bool:
        """Compare-and-set of the status: only one API replica decides an evaluation."""
        values: dict = {"status": new}
        if new not in OPEN:
            values |= {"decided_at": utcnow(), "reason": reason}
        with self.jobs.session() as s:
            done = s.execute(
                update(ShadowEvaluation)
                .where(ShadowEvaluation.id == evaluation_id, ShadowEvaluation.status == old)
                .values(**values)
            )
        return bool(done.rowcount)

    def latest(self, series_id: str) -> ShadowEvaluation | None:
        with self.jobs.session() as s:
            return s.scalar(
                select(ShadowEvaluation)
                .where(ShadowEvaluation.series_id == series_id)
                .order_by(ShadowEvaluation.id.desc())
                .limit(1)
            )
