"""The serving HTTP API (FastAPI), mounted by the Ray Serve deployment or by bare uvicorn.

Routes reach this process's PredictionService through `bind_service`: a module global,
because Ray Serve serves a copy of the FastAPI app (so `app.state` set on ours is not
seen) and each replica is its own process. Responses are serialised with orjson, numpy
arrays included, and per-point batch results come back in the form the points came in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator

from core.auth import AuthMiddleware
from core.errors import InvalidInput, ModelNotFound
from core.http import (
    ProxyRequestId,
    UnhandledErrors,
    install_error_handlers,
    read_limited,
    require_json,
)
from core.naming import require_series_id
from core.settings import Settings, get_settings
from serving.schemas import Point, PointColumns, PointRows, request_body
from serving.scoring import (
    Points,
    ScoreResult,
    ScoringModel,
    baseline_model,
    parse_predict_body,
    score_points,
)
from serving.service import PredictionService

MAX_BODY_BYTES = 4 * 1024 * 1024  # 32,768 points in the verbose form fit with room


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(registry: CollectorRegistry, settings: Callable[[], Settings] = get_settings,
               under_ray: bool = False) -> FastAPI:
    app = FastAPI(title="Serving", version="0.1.0",
                  summary="Real-time anomaly predictions, one model per series.")
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware, settings=settings)  # read in the replica, at first use
    Instrumentator(registry=registry, excluded_handlers=["/metrics"],
                   should_group_status_codes=False).instrument(app)
    app.add_middleware(UnhandledErrors)
    if under_ray:  # Ray Serve sets X-Request-ID on requests and responses itself
        app.add_middleware(ProxyRequestId)
    else:
        app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")

    @app.post("/predict/{series_id}", summary="Score one point",
              response_class=OrjsonResponse, openapi_extra=request_body(Point))
    async def predict(series_id: str, request: Request,
                      version: Annotated[int | None, Query(ge=1)] = None) -> OrjsonResponse:
        started = time.perf_counter()
        service = _service(request)
        series_id = _series_id(request, series_id)
        points = await _points(request)
        if not points.single:
            raise InvalidInput("send one point here, or a batch to /predict/{series_id}/batch")
        model = await service.model(series_id, version)
        result, seconds = _score(service, model.model, points.values, "single")
        if version is None:  # only production answers are compared with a shadow
            service.shadow.observe(series_id, model, points.values, result, seconds)
        return OrjsonResponse({
            "series_id": series_id,
            "timestamp": int(points.timestamps[0]),
            "value": float(points.values[0]),
            "anomaly": bool(result.anomaly[0]),
            "anomaly_score": float(result.scores[0]),
            "confidence": result.confidence,
            **_fields(model.model),
            "latency_ms": _ms(started),
        })

    @app.post("/predict/{series_id}/batch", summary="Score up to 32,768 points",
              response_class=OrjsonResponse,
              openapi_extra=request_body(PointRows, PointColumns))
    async def predict_batch(series_id: str, request: Request,
                            version: Annotated[int | None, Query(ge=1)] = None
                            ) -> OrjsonResponse:
        started = time.perf_counter()
        service = _service(request)
        series_id = _series_id(request, series_id)
        points = await _points(request)
        try:
            model = await service.model(series_id, version)
        except ModelNotFound:
            if version is not None:
                raise
            model = None  # no model anywhere: score the batch against itself
        if model is None:
            base = baseline_model(points.values)
            result, _ = _score(service, base, points.values, "baseline")
            fields = _fields(base)
        else:
            result, seconds = _score(service, model.model, points.values, "batch")
            fields = _fields(model.model)
            if version is None:
                service.shadow.observe(series_id, model, points.values, result, seconds)
        n, flagged = len(points.values), int(result.anomaly.sum())
        return OrjsonResponse({
            "series_id": series_id,
            "results": _results(points, result),
            "summary": {"points": n, "anomalies": flagged,
                        "anomaly_rate": flagged / n if n else 0.0,
                        "processing_ms": _ms(started)},
            "confidence": result.confidence,
            **fields,
            "latency_ms": _ms(started),
        })

    @app.get("/health")
    async def health(request: Request) -> OrjsonResponse:
        service = _service(request)
        stats = service.cache.stats()
        service.metrics.sync_cache(stats)
        return OrjsonResponse({
            "status": "ok" if service.breaker.state == "closed" else "degraded",
            "ready": service.ready,
            "uptime_s": round(time.monotonic() - service.started, 3),
            "models_cached": stats.size,
            "cache_hit_rate": round(stats.hit_rate, 4),
            "cache": {"hits": stats.hits, "misses": stats.misses, "evictions": stats.evictions,
                      "bytes": stats.bytes},
            "breaker": service.breaker.state,
            "inference_latency": service.latencies.percentiles_ms(),
        })

    @app.get("/readiness")
    async def readiness(request: Request) -> OrjsonResponse:
        ready = _service(request).ready
        return OrjsonResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/liveness")
    async def liveness() -> OrjsonResponse:
        return OrjsonResponse({"status": "alive"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # Two registries: the request metrics live with this app object (Ray Serve ships
        # a copy of it to the replica), the model server's with the replica's service.
        service = _service(request)
        service.metrics.sync_cache(service.cache.stats())
        body = generate_latest(registry) + generate_latest(service.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # Built now and kept as text: Ray Serve ships a pickled copy of the app, in which FastAPI's
    # "no example" marker is another object, so a document built there (or pickled with the
    # app) gives every parameter `"example": {}`.
    document = orjson.dumps(app.openapi())
    app.openapi = lambda: orjson.loads(document)  # type: ignore[method-assign]
    return app


_service_of_this_process: PredictionService | None = None


def bind_service(service: PredictionService) -> None:
    global _service_of_this_process
    _service_of_this_process = service


def _service(_: Request) -> PredictionService:
    if _service_of_this_process is None:
        raise RuntimeError("the prediction service is not started yet")
    return _service_of_this_process


def _series_id(request: Request, series_id: str) -> str:
    """The id as sent: `/predict/a%2Fbatch` must not become a batch for series `a`
    (routing sees the decoded path); a valid id needs no percent-encoding."""
    raw = request.scope.get("raw_path") or b""
    sent = raw.decode("latin-1").split("?")[0].split("/")[2:3]
    return require_series_id(sent[0] if sent else series_id)


async def _points(request: Request) -> Points:
    require_json(request.headers.get("content-type"))
    timeout_s = _service(request).settings.body_read_timeout_s
    raw = await read_limited(request.stream(), request.headers.get("content-length"),
                             MAX_BODY_BYTES, timeout_s)
    return parse_predict_body(raw)


def _score(service: PredictionService, model: ScoringModel, values: np.ndarray,
           kind: str) -> tuple[ScoreResult, float]:
    started = time.perf_counter()
    result = score_points(model, values)
    elapsed = time.perf_counter() - started
    service.latencies.add(elapsed)
    service.metrics.inference_seconds.labels(kind).observe(elapsed)
    service.metrics.points.labels(result.confidence).inc(len(values))
    service.metrics.anomalies.labels(result.confidence).inc(int(result.anomaly.sum()))
    return result, elapsed


def _fields(model: ScoringModel) -> dict:
    low, high = model.expected_range
    return {
        "expected_range": {"low": low, "high": high},
        "threshold": model.threshold,
        "model": {"name": model.name, "version": model.version, "source": model.source},
    }


def _results(points: Points, result: ScoreResult) -> Any:
    if points.columnar:
        return {"timestamps": points.timestamps, "values": points.values,
                "anomaly": result.anomaly, "anomaly_score": result.scores}
    return [
        {"timestamp": t, "value": v, "anomaly": a, "anomaly_score": s}
        for t, v, a, s in zip(points.timestamps.tolist(), points.values.tolist(),
                              result.anomaly.tolist(), result.scores.tolist(), strict=True)
    ]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
