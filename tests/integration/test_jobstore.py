"""The job store on SQLite (the default) and on a real PostgreSQL (the cluster's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from core.contracts import JobStatus
from core.errors import JobNotCancellable, JobNotFound
from core.jobstore import DuplicateJob, Job, JobStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        server = request.getfixturevalue("postgresql")
        url = server.url
    jobs = JobStore(url)
    jobs.create_schema()
    with jobs.engine.begin() as conn:  # each test starts empty
        conn.execute(text("DELETE FROM outbox"))
        conn.execute(text("DELETE FROM jobs"))
    yield jobs
    jobs.engine.dispose()


def new_job(series_id: str = "s1", sha: str = "a" * 64, key: str | None = None) -> Job:
    return Job(
        job_id=str(uuid.uuid4()),
        series_id=series_id,
        status=JobStatus.QUEUED,
        data_uri="file:///x.parquet",
        points=10_000,
        data_sha256=sha,
        config={"algorithm": "statistical"},
        job_metadata={},
        idempotency_key=key,
    )


def test_job_and_outbox_row_commit_together(store):
    job = new_job()
    store.add_job(job, "training.job.standard", b'{"m": 1}')
    assert store.get(job.job_id).status == JobStatus.QUEUED
    [row] = store.pending_outbox(10)
    assert (row.job_id, row.routing_key, row.body) == (
        job.job_id,
        "training.job.standard",
        b'{"m": 1}',
    )
    store.mark_sent([row.id])
    assert store.pending_outbox(10) == [] and store.outbox_backlog() == 0


def test_one_active_job_per_series_and_data(store):
    store.add_job(new_job(), "k", b"{}")
    with pytest.raises(DuplicateJob):
        store.add_job(new_job(), "k", b"{}")
    assert store.outbox_backlog() == 1  # the refused twin left no outbox row
    store.add_job(new_job(sha="b" * 64), "k", b"{}")  # other data
    store.add_job(new_job(series_id="s2"), "k", b"{}")  # other series


def test_a_finished_job_frees_its_data_for_a_new_job(store):
    first = new_job()
    store.add_job(first, "k", b"{}")
    store.cancel(first.job_id)
    store.add_job(new_job(), "k", b"{}")
    assert store.find_active("s1", "a" * 64).job_id != first.job_id


def test_idempotency_keys_are_unique(store):
    store.add_job(new_job(key="k1"), "k", b"{}")
    with pytest.raises(DuplicateJob):
        store.add_job(new_job(sha="c" * 64, key="k1"), "k", b"{}")
    assert store.find_by_idempotency_key("k1").data_sha256 == "a" * 64


def test_cancel_drops_the_unsent_message(store):
    job = new_job()
    store.add_job(job, "k", b"{}")
    assert store.cancel(job.job_id).status == JobStatus.CANCELLED
    assert store.outbox_backlog() == 0
    with pytest.raises(JobNotCancellable):
        store.cancel(job.job_id)
    with pytest.raises(JobNotFound):
        store.cancel(str(uuid.uuid4()))


def test_listing_filters_and_pages(store):
    ids = []
    for i in range(5):
        job = new_job(series_id="a" if i < 3 else "b", sha=f"{i:064d}")
        store.add_job(job, "k", b"{}")
        ids.append(job.job_id)
    store.cancel(ids[0])
    rows, total = store.list_jobs("a", None, page=1, page_size=2)
    assert total == 3 and len(rows) == 2
    rows2, _ = store.list_jobs("a", None, page=2, page_size=2)
    assert {r.job_id for r in rows + rows2} == set(ids[:3])
    cancelled, n = store.list_jobs(None, JobStatus.CANCELLED, page=1, page_size=10)
    assert n == 1 and cancelled[0].job_id == ids[0]
