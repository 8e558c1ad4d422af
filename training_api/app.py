"""Builds the training API: services in the lifespan, routers, middleware, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from anyio import to_thread
from asgi_correlation_id import CorrelationIdFilter, CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator

from core.auth import AuthMiddleware
from core.catalog import Catalog
from core.http import UnhandledErrors, install_error_handlers
from core.jobstore import JobStore
from core.logs import configure_logging
from core.publisher import Publisher
from core.settings import Settings
from core.shadows import ShadowStore
from core.storage import data_store
from training_api.audit import AuditLog
from training_api.deps import Services
from training_api.fits import FitService
from training_api.metrics import ApiMetrics
from training_api.models import ModelManager
from training_api.ratelimit import FitRateLimiter
from training_api.registry import ModelRegistry
from training_api.relay import OutboxRelay
from training_api.routes import fit, health, jobs, models, plot

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, [CorrelationIdFilter()])
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    limiter = FitRateLimiter(settings.fit_rate_limit, settings.rate_limit_storage_uri)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs_store = JobStore(settings.resolved_job_store_url)
        jobs_store.create_schema()  # shadow_evaluations too: core.shadows is imported
        publisher = Publisher(settings.rabbitmq_url, settings.publish_timeout_s)
        relay = OutboxRelay(jobs_store, publisher, settings.outbox_poll_s, settings.outbox_batch)
        metrics.outbox_backlog.set_function(jobs_store.outbox_backlog)
        data = data_store(settings.resolved_data_root, settings.s3_endpoint_url)
        registry = ModelRegistry(settings.mlflow_tracking_uri, settings.registry_timeout_s)
        catalog = Catalog(jobs_store)
        manager = ModelManager(settings, registry, catalog, ShadowStore(jobs_store),
                              AuditLog(settings.resolved_audit_log), publisher)
        app.state.services = Services(
            settings=settings,
            jobs=jobs_store,
            fits=FitService(jobs_store, data),
            limiter=limiter,
            publisher=publisher,
            relay=relay,
            metrics=metrics,
            started_at=time.monotonic(),
            data=data,
            catalog=catalog,
            registry=registry,
            models=manager,
        )
        tasks = [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(manager.judge(), name="shadow-decisions"),
            # import mlflow (seconds) now rather than in the first registry request
            asyncio.create_task(to_thread.run_sync(lambda: registry.client), name="mlflow"),
        ]
        log.info("training API ready", extra={"port": settings.api_port})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await publisher.close()
            jobs_store.engine.dispose()

    app = FastAPI(
        title="Training API",
        version="0.1.0",
        summary="Submit and track per-series anomaly-model training jobs.",
        lifespan=lifespan,
    )
    for router in (fit.router, jobs.router, models.router, plot.router, health.router):
        app.include_router(router)
    install_error_handlers(app)
    # Innermost of the middleware: the request metrics count 401 and 403 answers too.
    app.add_middleware(AuthMiddleware, settings=lambda: settings)
    Instrumentator(
        registry=registry, excluded_handlers=["/metrics"], should_group_status_codes=False
    ).instrument(app).expose(app, include_in_schema=False)
    app.add_middleware(UnhandledErrors)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document plus the models of bodies parsed outside FastAPI."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in fit.OPENAPI_MODELS:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
    return app.openapi_schema
