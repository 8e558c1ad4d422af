"""Accepting a fit: parse, validate, deduplicate, store the data, record job + message.

Runs in a worker thread (it parses megabytes and touches disk); the event loop only
reads the body.
"""

from __future__ import annotations

import logging
import uuid

from core.contracts import JobMessage, JobStatus, utcnow
from core.errors import IdempotencyKeyReused, InvalidInput
from core.hashing import data_sha256
from core.jobstore import DuplicateJob, Job, JobStore
from core.storage import TrainingDataStore, to_frame
from core.topology import job_routing_key
from training_api.body import parse_fit_body

log = logging.getLogger(__name__)


def check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not (1 <= len(key) <= 255 and key.isascii() and key.isprintable()):
        raise InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


class FitService:
    def __init__(self, jobs: JobStore, data: TrainingDataStore) -> None:
        self._jobs = jobs
        self._data = data

    def submit(self, series_id: str, raw: bytes, idempotency_key: str | None) -> tuple[Job, bool]:
        """Return (job, deduplicated). A new job is committed with its outbox row."""
        body = parse_fit_body(raw)
        sha = data_sha256(body.timestamps, body.values)
        existing = self._existing(series_id, sha, idempotency_key)
        if existing is not None:
            return existing, True

        job_id = uuid.uuid4()
        uri = self._data.write(series_id, job_id, to_frame(body.timestamps, body.values))
        message = JobMessage(
            job_id=job_id,
            series_id=series_id,
            data_uri=uri,
            points=len(body.values),
            data_sha256=sha,
            config=body.config,
            metadata=body.metadata,
            submitted_at=utcnow(),
        )
        job = Job(
            job_id=str(job_id),
            series_id=series_id,
            status=JobStatus.QUEUED,
            data_uri=uri,
            points=message.points,
            data_sha256=sha,
            config=body.config.model_dump(mode="json"),
            job_metadata=body.metadata.model_dump(mode="json"),
            idempotency_key=idempotency_key,
        )
        try:
            self._jobs.add_job(
                job, job_routing_key(body.metadata.priority), message.model_dump_json().encode()
            )
        except DuplicateJob:
            # An identical fit committed between our check and our insert.
            self._data.delete(uri)
            twin = self._existing(series_id, sha, idempotency_key)
            if twin is None:
                raise
            return twin, True
        except BaseException:
            self._data.delete(uri)  # no data without a job
            raise
        return job, False

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job and delete its data, so no later training window sees it."""
        job = self._jobs.cancel(job_id)
        try:
            self._data.delete(job.data_uri)
        except Exception:  # the job is cancelled either way; a stray file is only space
            log.exception("could not delete the data of cancelled job %s", job_id)
        return job

    def _existing(self, series_id: str, sha: str, key: str | None) -> Job | None:
        if key is not None:
            job = self._jobs.find_by_idempotency_key(key)
            if job is not None:
                if (job.series_id, job.data_sha256) != (series_id, sha):
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used for another request "
                        f"(job {job.job_id}); use a new key for new data",
                        details=[{"job_id": job.job_id}],
                    )
                return job
        return self._jobs.find_active(series_id, sha)
