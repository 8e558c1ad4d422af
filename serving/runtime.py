"""Everything a replica runs besides requests: building the service, warm-up, following
completion events, going back to the registry after an outage, the staleness metric.
Shared by the Ray Serve deployment and the bare uvicorn app."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from core.jobstore import JobStore
from core.logs import configure_logging
from core.settings import Settings
from core.shadows import ShadowStore
from serving.api import bind_service, create_app
from serving.freshness import follow_completions
from serving.loader import ModelLoader
from serving.metrics import ServingMetrics
from serving.service import PredictionService

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 15.0


def new_app(under_ray: bool = False) -> FastAPI:
    """The routes, with the request metrics' registry."""
    return create_app(CollectorRegistry(), under_ray=under_ray)


def attach_service(settings: Settings) -> PredictionService:
    from asgi_correlation_id import CorrelationIdFilter

    configure_logging(settings.log_level, [CorrelationIdFilter()])
    loader = ModelLoader(settings.mlflow_tracking_uri, settings.resolved_model_dir,
                         timeout_s=settings.registry_timeout_s)
    # Shadow counts go to the job store, shared by every replica and the training API.
    shadows = ShadowStore(JobStore(settings.resolved_job_store_url))
    service = PredictionService(settings, loader, ServingMetrics(CollectorRegistry()), shadows)
    bind_service(service)
    return service


def start_background(service: PredictionService) -> list[asyncio.Task]:
    return [
        asyncio.create_task(service.warm_up(), name="warm-up"),
        asyncio.create_task(
            follow_completions(service.settings.rabbitmq_url, service.on_model_changed),
            name="completion-events",
        ),
        asyncio.create_task(_housekeeping(service), name="housekeeping"),
        asyncio.create_task(service.shadow.run(), name="shadow-sync"),
    ]


async def stop_background(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _housekeeping(service: PredictionService) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        try:
            await service.refresh_local_copies()
            await service.count_stale()
        except Exception:  # never let bookkeeping take the replica down
            log.exception("housekeeping failed")
