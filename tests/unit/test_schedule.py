"""The retraining schedule asks for runs of stale series only (real SQLite job store)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from core.contracts import JobStatus, utcnow
from core.jobstore import Job, JobStore, SeriesModel
from pipelines.resources import JobStoreResource
from pipelines.schedules import retrain_models


def model(series_id: str, age: timedelta) -> SeriesModel:
    return SeriesModel(series_id=series_id, version=1, algorithm="statistical",
                       data_sha256="a" * 64, last_data_timestamp=1, trained_at=utcnow() - age)


def test_only_stale_series_are_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_MAX_AGE_HOURS", "168")
    monkeypatch.setenv("MAX_JOBS_PER_RUN", "2")
    from core.settings import get_settings

    get_settings.cache_clear()
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    store.create_schema()
    store.record_model(model("fresh", timedelta(hours=1)))
    store.record_model(model("old_a", timedelta(days=8)))
    store.record_model(model("old_b", timedelta(days=30)))
    store.record_model(model("new_data", timedelta(hours=2)))
    store.record_model(model("busy", timedelta(hours=2)))
    # new data that never trained (its job failed) makes a model stale; an active job does not
    for series_id, status in (("new_data", JobStatus.FAILED), ("busy", JobStatus.QUEUED)):
        store.add_job(Job(job_id=f"00000000-0000-4000-8000-{len(series_id):012d}",
                          series_id=series_id, status=status, data_uri="file:///x",
                          points=10_000, data_sha256="b" * 64, config={}, job_metadata={}),
                      "k", b"{}")

    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 29, 3, 0, tzinfo=UTC),
        resources={"jobs": JobStoreResource(url=url)},
    )
    requests = list(retrain_models(context))
    get_settings.cache_clear()

    series = [s for r in requests for s in r.run_config["ops"]["train_models"]["config"][
        "series_ids"]]
    assert sorted(series) == ["new_data", "old_a", "old_b"]
    assert all(len(r.run_config["ops"]["train_models"]["config"]["series_ids"]) <= 2
               for r in requests)
    assert len({r.run_key for r in requests}) == len(requests)


def test_nothing_stale_skips(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    store.create_schema()
    store.record_model(model("fresh", timedelta(hours=1)))
    context = dg.build_schedule_context(resources={"jobs": JobStoreResource(url=url)})
    assert isinstance(retrain_models(context), dg.SkipReason)
