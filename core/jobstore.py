"""The job store: job rows and their outbox, written in one transaction (SQLAlchemy).

SQLite file by default, PostgreSQL by URL. A partial unique index allows one active
(queued or running) job per series and data hash, so identical concurrent fits collapse
into one job even across API replicas.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from core.contracts import JobStatus, utcnow
from core.errors import JobNotCancellable, JobNotFound

_ACTIVE = "status IN ('queued', 'running')"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    series_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    data_uri: Mapped[str] = mapped_column(Text)
    points: Mapped[int] = mapped_column(Integer)
    data_sha256: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]]
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    model_version: Mapped[int | None]
    run_id: Mapped[str | None] = mapped_column(String(64))
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    # The Dagster run key this job was assigned to by the queue sensor (see pipelines/).
    run_key: Mapped[str | None] = mapped_column(String(64), index=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(
            "one_active_job_per_data",
            "series_id",
            "data_sha256",
            unique=True,
            sqlite_where=text(_ACTIVE),
            postgresql_where=text(_ACTIVE),
        ),
    )


class OutboxRow(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"))
    routing_key: Mapped[str] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(index=True)


class SeriesModel(Base):
    """The catalog: each series' production model as the pipeline last left it."""

    __tablename__ = "series_models"

    series_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int]
    algorithm: Mapped[str] = mapped_column(String(32))
    data_sha256: Mapped[str] = mapped_column(String(64))
    last_data_timestamp: Mapped[int]
    trained_at: Mapped[datetime] = mapped_column(index=True)


class DuplicateJob(Exception):
    """Another active job holds the same data, or the idempotency key is taken."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a committed 202 survives a crash
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class JobStore:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            if self.engine.url.database not in (None, "", ":memory:"):
                Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- accepting fits -------------------------------------------------------------------

    def find_by_idempotency_key(self, key: str) -> Job | None:
        with self.session() as s:
            return s.scalar(select(Job).where(Job.idempotency_key == key))

    def find_active(self, series_id: str, data_sha256: str) -> Job | None:
        with self.session() as s:
            return s.scalar(
                select(Job).where(
                    Job.series_id == series_id,
                    Job.data_sha256 == data_sha256,
                    Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                )
            )

    def add_job(self, job: Job, routing_key: str, message: bytes) -> None:
        """Insert the job and its outbox row atomically; DuplicateJob if a twin won a race."""
        now = utcnow()
        job.created_at = job.updated_at = now
        try:
            with self.session() as s:
                s.add(job)
                s.flush()
                s.add(
                    OutboxRow(
                        job_id=job.job_id, routing_key=routing_key, body=message, created_at=now
                    )
                )
        except IntegrityError as exc:
            raise DuplicateJob(str(exc.orig)) from exc

    # -- reading and cancelling -----------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.session() as s:
            job = s.get(Job, _job_key(job_id))
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        return job

    def list_jobs(
        self, series_id: str | None, status: JobStatus | None, page: int, page_size: int
    ) -> tuple[Sequence[Job], int]:
        query = select(Job)
        if series_id:
            query = query.where(Job.series_id == series_id)
        if status:
            query = query.where(Job.status == status)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(Job.created_at.desc(), Job.job_id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
        return rows, total

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job; its unsent message is dropped with it."""
        key = _job_key(job_id)
        with self.session() as s:
            done = s.execute(
                update(Job)
                .where(Job.job_id == key, Job.status == JobStatus.QUEUED)
                .values(status=JobStatus.CANCELLED, updated_at=utcnow(), finished_at=utcnow())
            )
            if done.rowcount:
                s.execute(
                    update(OutboxRow)
                    .where(OutboxRow.job_id == key, OutboxRow.sent_at.is_(None))
                    .values(sent_at=utcnow())
                )
        job = self.get(job_id)
        if not done.rowcount:
            raise JobNotCancellable(
                f"job {job_id} is {job.status}; only queued jobs can be cancelled",
                details=[{"job_id": job_id, "status": job.status}],
            )
        return job

    # -- the training pipeline ----------------------------------------------------------

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        with self.session() as s:
            rows = s.scalars(select(Job).where(Job.job_id.in_(list(job_ids)))).all()
        return {job.job_id: job for job in rows}

    def assign_run_key(self, job_ids: Sequence[str], run_key: str) -> None:
        """Record durably which run will train these jobs, before the run is requested."""
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.job_id.in_(list(job_ids)), Job.run_key.is_(None))
                .values(run_key=run_key, updated_at=utcnow())
            )

    def jobs_of_run_key(self, run_key: str) -> Sequence[Job]:
        with self.session() as s:
            return s.scalars(select(Job).where(Job.run_key == run_key).order_by(Job.job_id)).all()

    def latest_for_series(self, series_id: str) -> Job | None:
        with self.session() as s:
            return s.scalar(
                select(Job)
                .where(Job.series_id == series_id, Job.status != JobStatus.CANCELLED)
                .order_by(Job.created_at.desc())
                .limit(1)
            )

    def mark_running(self, job_id: str, dagster_run_id: str) -> bool:
        """Queued (or a retried running) job → running; False if it was cancelled or ended."""
        now = utcnow()
        with self.session() as s:
            done = s.execute(
                update(Job)
                .where(Job.job_id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                .values(
                    status=JobStatus.RUNNING,
                    dagster_run_id=dagster_run_id,
                    started_at=now,
                    updated_at=now,
                )
            )
        return bool(done.rowcount)

    def mark_succeeded(self, job_id: str, model_version: int, run_id: str | None) -> None:
        now = utcnow()
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.job_id == job_id)
                .values(
                    status=JobStatus.SUCCEEDED,
                    model_version=model_version,
                    run_id=run_id,
                    error_code=None,
                    error_message=None,
                    finished_at=now,
                    updated_at=now,
                )
            )

    def mark_failed(self, job_ids: Sequence[str], code: str, message: str) -> list[str]:
        """Fail the jobs still queued or running; return those that were."""
        now = utcnow()
        with self.session() as s:
            open_ids = s.scalars(
                select(Job.job_id).where(
                    Job.job_id.in_(list(job_ids)),
                    Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                )
            ).all()
            if open_ids:
                s.execute(
                    update(Job)
                    .where(Job.job_id.in_(open_ids))
                    .values(
                        status=JobStatus.FAILED,
                        error_code=code,
                        error_message=message[:2000],
                        finished_at=now,
                        updated_at=now,
                    )
                )
        return list(open_ids)

    def record_model(self, model: SeriesModel) -> None:
        with self.session() as s:
            s.merge(model)

    def stale_series(self, trained_before: datetime, limit: int) -> list[str]:
        """Series whose model is older than `trained_before`, or that received data (a job
        that is not active, e.g. failed or cancelled) after their model was trained."""
        newer_data = (
            select(Job.series_id)
            .where(
                Job.series_id == SeriesModel.series_id,
                Job.created_at > SeriesModel.trained_at,
                Job.status.not_in([JobStatus.QUEUED, JobStatus.RUNNING]),
            )
            .exists()
        )
        with self.session() as s:
            return list(
                s.scalars(
                    select(SeriesModel.series_id)
                    .where((SeriesModel.trained_at < trained_before) | newer_data)
                    .order_by(SeriesModel.trained_at)
                    .limit(limit)
                ).all()
            )

    # -- the outbox relay ---------------------------------------------------------------

    def pending_outbox(self, limit: int) -> Sequence[OutboxRow]:
        with self.session() as s:
            return s.scalars(
                select(OutboxRow)
                .where(OutboxRow.sent_at.is_(None))
                .order_by(OutboxRow.id)
                .limit(limit)
            ).all()

    def mark_sent(self, ids: Sequence[int]) -> None:
        if ids:
            with self.session() as s:
                s.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(sent_at=utcnow()))

    def outbox_backlog(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) or 0


def _job_key(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise JobNotFound(f"no job {job_id!r}: job ids are UUIDs") from None
