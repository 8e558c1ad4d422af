"""The `retrain_models` schedule: retrain series whose model is stale.

Stale: trained longer ago than RETRAIN_MAX_AGE_HOURS, or data arrived after the model was
trained (a job that failed or was cancelled, say). Training sees the window ending at the
newest data, so a retrain with new data moves the window; one with the same data and
config makes no new version.
"""

from datetime import timedelta

import dagster as dg

from core.contracts import utcnow
from core.settings import get_settings
from pipelines.jobs import train_models_job
from pipelines.resources import JobStoreResource


@dg.schedule(
    job=train_models_job,
    cron_schedule=get_settings().retrain_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrains stale models in batches.",
)
def retrain_models(context: dg.ScheduleEvaluationContext, jobs: JobStoreResource):
    settings = get_settings()
    cutoff = utcnow() - timedelta(hours=settings.retrain_max_age_hours)
    stale = jobs.store.stale_series(cutoff, settings.retrain_max_series)
    if not stale:
        return dg.SkipReason("no stale model")
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    size = settings.max_jobs_per_run
    return [
        dg.RunRequest(
            run_key=f"retrain-{tick}-{i // size}",
            run_config={"ops": {"train_models": {"config": {"series_ids": stale[i : i + size]}}}},
            tags={"adp/trigger": "schedule"},
        )
        for i in range(0, len(stale), size)
    ]
