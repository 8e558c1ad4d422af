"""Health, readiness and liveness.

Readiness needs the job store only: with the broker down the API still accepts fits
(they wait in the outbox), so it must stay in the load balancer; the body says it is
degraded.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from training_api.deps import Services, ServicesDep
from training_api.schemas import Health

router = APIRouter(tags=["health"])


async def _check(services: Services) -> Health:
    try:
        backlog = await run_in_threadpool(services.jobs.outbox_backlog)
        store_ok = True
    except Exception:  # any failure of the store means not ready
        backlog, store_ok = None, False
    broker_ok = services.publisher.connected
    status = "down" if not store_ok else "ok" if broker_ok else "degraded"
    return Health(
        status=status,
        uptime_s=round(time.monotonic() - services.started_at, 3),
        job_store=store_ok,
        broker=broker_ok,
        outbox_backlog=backlog,
        relay_error=services.relay.last_error,
    )


@router.get("/health", response_model=Health)
async def health(services: ServicesDep) -> Health:
    return await _check(services)


@router.get("/readiness", response_model=Health, responses={503: {"model": Health}})
async def readiness(services: ServicesDep) -> JSONResponse:
    result = await _check(services)
    return JSONResponse(
        result.model_dump(mode="json"), status_code=200 if result.job_store else 503
    )


@router.get("/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "alive"}
