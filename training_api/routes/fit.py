"""POST /fit/{series_id}: accept a training job."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from core.contracts import FitRequest
from core.errors import PlatformError
from core.http import read_limited, require_json
from core.naming import require_series_id
from training_api.deps import ServicesDep
from training_api.fits import check_idempotency_key
from training_api.routes import errors
from training_api.schemas import FitAccepted

log = logging.getLogger(__name__)
router = APIRouter(tags=["training"])

# The body is parsed by simdjson straight into arrays, so FastAPI does not see a model
# parameter; the schema is documented here instead (components are added in main.py).
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FitRequest"}}},
    }
}
OPENAPI_MODELS = [FitRequest]


@router.post(
    # `:path` so that a series id with a slash reaches validation and gets its error code.
    "/fit/{series_id:path}",
    status_code=202,
    response_model=FitAccepted,
    openapi_extra=_BODY,
    summary="Submit a training job for one series",
    responses=errors(400, 408, 409, 413, 415, 422, 429, 503),
)
async def fit(
    series_id: str,
    request: Request,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FitAccepted:
    try:
        require_series_id(series_id)
        require_json(request.headers.get("content-type"))
        check_idempotency_key(idempotency_key)
        services.limiter.hit(series_id)
        raw = await read_limited(
            request.stream(),
            request.headers.get("content-length"),
            services.settings.max_body_bytes,
            services.settings.body_read_timeout_s,
        )
        job, deduplicated = await run_in_threadpool(
            services.fits.submit, series_id, raw, idempotency_key
        )
    except PlatformError as exc:
        services.metrics.fits_rejected.labels(exc.code).inc()
        log.info("fit rejected", extra={"series_id": series_id[:80], "code": exc.code})
        raise
    if deduplicated:
        services.metrics.fits_deduplicated.inc()
    else:
        services.metrics.fits_accepted.inc()
        services.relay.notify()
    log.info(
        "fit accepted",
        extra={"series_id": series_id, "job_id": job.job_id, "deduplicated": deduplicated},
    )
    return FitAccepted(
        job_id=job.job_id,
        series_id=job.series_id,
        status=job.status,
        status_url=str(request.url_for("get_job", job_id=job.job_id).path),
        deduplicated=deduplicated,
    )

