"""A job's life in the pipeline: its row in the job store and its training event."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.contracts import TrainingEvent, utcnow
from core.errors import PlatformError
from core.jobstore import Job, JobStore, SeriesModel
from core.naming import model_name
from core.shadows import ShadowStore
from pipelines.broker import Broker
from pipelines.training import Trained

log = logging.getLogger(__name__)


def succeeded(
    store: JobStore, broker: Broker, job_id: str | None, trained: Trained, algorithm: str
) -> None:
    if job_id:
        store.mark_succeeded(job_id, trained.version, trained.run_id)
    if trained.shadow_of is not None:  # NEW_VERSION_ALIAS=shadow: evaluated before it serves
        ShadowStore(store).start(trained.series_id, trained.version, trained.shadow_of,
                                 "pipeline")
    store.record_model(
        SeriesModel(
            series_id=trained.series_id,
            version=trained.shadow_of or trained.version,  # the catalog names production
            algorithm=algorithm,
            data_sha256=trained.data["data_sha256"],
            last_data_timestamp=trained.data["last_timestamp"],
            trained_at=utcnow(),
        )
    )
    _publish(
        broker,
        TrainingEvent(
            event="completed",
            job_id=job_id,
            series_id=trained.series_id,
            model_name=model_name(trained.series_id),
            version=trained.version,
            run_id=trained.run_id,
            metrics=trained.metrics,
        ),
    )


def failed(store: JobStore, broker: Broker, jobs: Sequence[Job], code: str, reason: str) -> None:
    """Fail the jobs still open and announce each; jobs already ended are left as they are."""
    newly_failed = set(store.mark_failed([j.job_id for j in jobs], code, reason))
    for job in jobs:
        if job.job_id in newly_failed:
            _publish(
                broker,
                TrainingEvent(
                    event="failed",
                    job_id=job.job_id,
                    series_id=job.series_id,
                    model_name=model_name(job.series_id),
                    error_code=code,
                    error_message=reason,
                ),
            )


def error_code(exc: BaseException) -> str:
    return str(exc.code) if isinstance(exc, PlatformError) else "TRAINING_FAILED"


def _publish(broker: Broker, event: TrainingEvent) -> None:
    # The job row is the record; an event lost to a broker outage is logged, not fatal.
    try:
        broker.publish_event(event)
    except Exception:
        log.exception("could not publish the %s event of %s", event.event, event.series_id)
