"""GET /plot: a version's training data, centre line, threshold band and metrics, as HTML."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from core.naming import require_series_id
from training_api.deps import ServicesDep
from training_api.plot import plot_data
from training_api.plot_page import CSP, render
from training_api.routes import errors

router = APIRouter(tags=["models"])


@router.get("/plot", response_class=HTMLResponse, responses=errors(404, 422, 503))
async def plot(
    services: ServicesDep,
    series_id: str,
    version: Annotated[int | None, Query(ge=1, description="Default: production.")] = None,
    width: Annotated[int, Query(ge=100, le=4000, description="Pixel buckets.")] = 1150,
) -> HTMLResponse:
    """Self-contained page (no external resources); data down-sampled to min/max per bucket."""
    require_series_id(series_id)
    # Reading Parquet, loading the model and scoring the data: a worker thread's job.
    data = await to_thread.run_sync(plot_data, services.registry, services.data, series_id,
                                    version, width)
    return HTMLResponse(render(data), headers={"Content-Security-Policy": CSP})
