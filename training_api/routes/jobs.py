"""Job status: read one, list with filters, cancel while queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from core.contracts import JobStatus
from core.naming import require_series_id
from training_api.deps import ServicesDep
from training_api.routes import errors
from training_api.schemas import JobPage, JobView

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobView, responses=errors(404))
async def get_job(job_id: str, services: ServicesDep) -> JobView:
    return JobView.of(await run_in_threadpool(services.jobs.get, job_id))


@router.get("", response_model=JobPage, responses=errors(422))
async def list_jobs(
    services: ServicesDep,
    series_id: str | None = None,
    status: JobStatus | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    if series_id is not None:
        require_series_id(series_id)
    rows, total = await run_in_threadpool(
        services.jobs.list_jobs, series_id, status, page, page_size
    )
    return JobPage(items=[JobView.of(j) for j in rows], page=page, page_size=page_size, total=total)


@router.delete("/{job_id}", response_model=JobView, responses=errors(404, 409))
async def cancel_job(job_id: str, services: ServicesDep) -> JobView:
    return JobView.of(await run_in_threadpool(services.fits.cancel, job_id))
