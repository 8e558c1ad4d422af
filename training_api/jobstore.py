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
