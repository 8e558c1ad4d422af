"""Sensors: the queue sensor that turns job messages into runs, and the run-failure sensor.

Delivery is at-least-once with no duplicates. Per tick the queue sensor reads a bounded
batch (the priority queue first). A new job is assigned a run key in the job store, and
its run is requested; its message goes back to the queue. A message is acknowledged only
on a later tick, once a run with its key exists, so a daemon killed at any moment loses no
job, and the run key (Dagster skips a key it has seen) trains none twice. Poison messages
are dead-lettered with the reason logged and never block the messages behind them.
"""

import hashlib
import logging

import dagster as dg
import polars as pl
from pydantic import ValidationError

from core.contracts import JobMessage, JobStatus, Priority
from core.jobstore import JobStore
from core.settings import get_settings
from core.storage import TrainingDataStore
from core.topology import JOBS_QUEUE, PRIORITY_QUEUE
from pipelines import lifecycle
from pipelines.broker import Delivery, Outcome
from pipelines.jobs import JOB_IDS_TAG, PRIORITY_TAG, train_models_job
from pipelines.partitions import SERIES
from pipelines.resources import BrokerResource, JobStoreResource, TrainingDataResource

log = logging.getLogger(__name__)

RUN_KEY_TAG = "dagster/run_key"
_ENDED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def run_key_for(job_ids: list[str]) -> str:
    if len(job_ids) == 1:
        return job_ids[0]
    return "batch-" + hashlib.sha256(",".join(sorted(job_ids)).encode()).hexdigest()[:32]


def run_request(run_key: str, job_ids: list[str], high: bool) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        run_config={"ops": {"train_models": {"config": {"job_ids": job_ids}}}},
        tags={
            JOB_IDS_TAG: ",".join(job_ids),
            PRIORITY_TAG: "high" if high else "normal",
            # the queued run coordinator dequeues higher priorities first
            "dagster/priority": "1" if high else "0",
        },
    )


class TickPlan:
    """What one tick decides: each message's outcome, the runs, partitions and events."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        store: JobStore,
        data: TrainingDataStore,
        max_jobs_per_run: int,
    ) -> None:
        self.instance, self.store, self.data = instance, store, data
        self.max_jobs_per_run = max_jobs_per_run
        self.run_requests: dict[str, dg.RunRequest] = {}
        self.new_series: set[str] = set()
        self.asset_events: list[dg.AssetMaterialization] = []

    def decide(self, deliveries: list[Delivery]) -> None:
        messages: dict[str, JobMessage] = {}
        copies: dict[str, list[Delivery]] = {}  # a redelivery may sit in the same batch
        for d in deliveries:
            try:
                message = JobMessage.model_validate_json(d.body)
            except ValidationError as exc:
                d.outcome, d.reason = Outcome.DEAD_LETTER, _poison_reason(exc)
                continue
            messages[str(message.job_id)] = message
            copies.setdefault(str(message.job_id), []).append(d)
        rows = self.store.get_many(list(messages))
        fresh: list[JobMessage] = []
        for job_id, message in messages.items():
            job, outcome, reason = rows.get(job_id), Outcome.REQUEUE, ""
            if job is None:
                outcome, reason = Outcome.DEAD_LETTER, f"job {job_id} is not in the job store"
            elif job.status in _ENDED:
                outcome = Outcome.ACK  # cancelled, or a redelivery of a trained job
            elif job.run_key and self._run_exists(job.run_key):
                outcome = Outcome.ACK
            elif job.run_key:
                self._request(job.run_key)  # assigned, but the run was never created
            else:
                fresh.append(message)
            for d in copies[job_id]:
                d.outcome, d.reason = outcome, reason
        if fresh and self._training_run_pending():
            # The others wait in the queue, so the next run takes a bigger batch; a
            # high-priority job does not wait for that.
            fresh = [m for m in fresh if m.metadata.priority == Priority.HIGH]
        self._plan_fresh(fresh)

    def _training_run_pending(self) -> bool:
        """A training run that has not started yet (queued, or paying its start-up).

        Requesting another one now would only queue a small batch behind it; leaving the
        messages in RabbitMQ lets batches grow with the backlog instead."""
        pending = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
        ]
        return (
            self.instance.get_runs_count(
                dg.RunsFilter(job_name=train_models_job.name, statuses=pending)
            )
            > 0
        )

    def _plan_fresh(self, fresh: list[JobMessage]) -> None:
        fresh.sort(key=lambda m: m.metadata.priority != Priority.HIGH)  # high ones first
        for start in range(0, len(fresh), self.max_jobs_per_run):
            batch = fresh[start : start + self.max_jobs_per_run]
            ids = [str(m.job_id) for m in batch]
            key = run_key_for(ids)
            self.store.assign_run_key(ids, key)  # durable before the run is requested
            self._request(key)
            for m in batch:
                self.new_series.add(m.series_id)
                self.asset_events.append(self._training_data_event(m))

    def _request(self, run_key: str) -> None:
        if run_key not in self.run_requests:
            jobs = self.store.jobs_of_run_key(run_key)
            high = any(j.job_metadata.get("priority") == Priority.HIGH for j in jobs)
            self.run_requests[run_key] = run_request(run_key, [j.job_id for j in jobs], high)

    def _run_exists(self, run_key: str) -> bool:
        return self.instance.get_runs_count(dg.RunsFilter(tags={RUN_KEY_TAG: run_key})) > 0

    def _training_data_event(self, m: JobMessage) -> dg.AssetMaterialization:
        span = (
            self.data.scan(m.data_uri)
            .select(
                pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last")
            )
            .collect()
        )
        return dg.AssetMaterialization(
            asset_key="training_data",
            partition=m.series_id,
            metadata={
                "data_uri": m.data_uri,
                "rows": m.points,
                "data_sha256": m.data_sha256,
                "first_timestamp": int(span["first"][0]),
                "last_timestamp": int(span["last"][0]),
                "job_id": str(m.job_id),
            },
        )


def _poison_reason(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"invalid job message ({exc.error_count()} problem(s)): {where}: {first['msg']}"


@dg.sensor(
    job=train_models_job,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads training-priority-high then training-jobs and requests training runs.",
)
def training_jobs_sensor(
    context: dg.SensorEvaluationContext,
    broker: BrokerResource,
    jobs: JobStoreResource,
    data: TrainingDataResource,
) -> dg.SensorResult | dg.SkipReason:
    settings = get_settings()
    plan = TickPlan(context.instance, jobs.store, data.store, settings.max_jobs_per_run)
    deliveries = broker.broker.process(
        [PRIORITY_QUEUE, JOBS_QUEUE], settings.sensor_max_messages, plan.decide
    )
    if not deliveries:
        return dg.SkipReason("no job messages")
    new_partitions = sorted(
        plan.new_series
        - set(context.instance.get_existing_dynamic_partitions(SERIES, sorted(plan.new_series)))
    )
    counts = {o: sum(d.outcome is o for d in deliveries) for o in Outcome}
    context.log.info(
        f"{len(deliveries)} message(s): {counts[Outcome.ACK]} acknowledged, "
        f"{counts[Outcome.DEAD_LETTER]} dead-lettered, "
        f"{len(plan.run_requests)} run(s) requested"
    )
    return dg.SensorResult(
        run_requests=list(plan.run_requests.values()),
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(SERIES, new_partitions)]
        if new_partitions
        else [],
        asset_events=plan.asset_events,
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    monitored_jobs=[train_models_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails the jobs of a training run that ended without finishing them.",
)
def training_run_failed(
    context: dg.RunStatusSensorContext, jobs: JobStoreResource, broker: BrokerResource
) -> None:
    _fail_open_jobs(context, jobs, broker, "RUN_FAILED")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    monitored_jobs=[train_models_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails the jobs of a cancelled training run.",
)
def training_run_canceled(
    context: dg.RunStatusSensorContext, jobs: JobStoreResource, broker: BrokerResource
) -> None:
    _fail_open_jobs(context, jobs, broker, "RUN_CANCELED")


def _fail_open_jobs(
    context: dg.RunStatusSensorContext, jobs: JobStoreResource, broker: BrokerResource, code: str
) -> None:
    run = context.dagster_run
    job_ids = [j for j in run.tags.get(JOB_IDS_TAG, "").split(",") if j]
    if not job_ids:
        return
    rows = list(jobs.store.get_many(job_ids).values())
    reason = f"Dagster run {run.run_id} ended {run.status.value} before training these jobs"
    failure = context.failure_event if hasattr(context, "failure_event") else None
    if failure is not None and failure.message:
        reason += f": {failure.message[:500]}"
    lifecycle.failed(jobs.store, broker.broker, rows, code, reason)
