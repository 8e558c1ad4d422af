"""The model catalog and the versions of a series; promotion, rollback and shadows."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Path, Query

from core.naming import PRODUCTION_ALIAS, SHADOW_ALIAS, model_name, require_series_id
from training_api.audit import ActorDep
from training_api.deps import ServicesDep
from training_api.model_schemas import (
    KEY_METRICS,
    Promotion,
    SeriesPage,
    SeriesView,
    ShadowView,
    VersionList,
    VersionView,
    from_ms,
)
from training_api.routes import errors
from training_api.schemas import _utc

router = APIRouter(tags=["models"])
VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Registered version number.")]


@router.get("/series", response_model=SeriesPage, responses=errors(422, 503))
async def list_series(
    services: ServicesDep,
    prefix: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_]*$")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SeriesPage:
    """Series with a model: production and shadow version, last trained, versions kept."""
    rows, total = await to_thread.run_sync(services.catalog.page, prefix, page, page_size)
    found = await to_thread.run_sync(services.registry.versions, [r.series_id for r in rows])
    items = []
    for row in rows:
        versions = found.get(row.series_id, [])
        alias = {a: v.version for v in versions for a in v.aliases}
        items.append(SeriesView(
            series_id=row.series_id, model=model_name(row.series_id),
            production_version=alias.get(PRODUCTION_ALIAS), shadow_version=alias.get(SHADOW_ALIAS),
            versions_kept=len(versions), algorithm=row.algorithm,
            last_trained=_utc(row.trained_at), last_data_timestamp=row.last_data_timestamp))
    return SeriesPage(items=items, page=page, page_size=page_size, total=total)


@router.get("/models/{series_id}/versions", response_model=VersionList,
            responses=errors(404, 422, 503))
async def list_versions(series_id: str, services: ServicesDep) -> VersionList:
    """Every kept version: created, alias, algorithm, key metrics, job, data hash, run link."""
    require_series_id(series_id)
    registry, ui = services.registry, services.settings.resolved_mlflow_ui_url

    def read() -> VersionList:
        aliases = registry.aliases(series_id)  # ModelNotFound for an unknown series
        views = []
        for v in registry.versions([series_id])[series_id]:
            run = registry.run(v.run_id)
            views.append(VersionView(
                version=v.version, created_at=from_ms(v.created_ms),
                alias=next((a for a in (PRODUCTION_ALIAS, SHADOW_ALIAS) if a in v.aliases), None),
                aliases=v.aliases, algorithm=v.tags.get("algorithm"),
                metrics={k: run.metrics[k] for k in KEY_METRICS if k in run.metrics},
                job_id=v.tags.get("job_id") or None, data_sha256=v.tags.get("data_sha256"),
                run_id=v.run_id,
                run_url=f"{ui}/#/experiments/{run.experiment_id}/runs/{v.run_id}"
                if run.experiment_id else None,
                promoted_by=v.tags.get("promoted_by"), promoted_at=v.tags.get("promoted_at")))
        return VersionList(series_id=series_id, model=model_name(series_id),
                           production_version=aliases.get(PRODUCTION_ALIAS),
                           shadow_version=aliases.get(SHADOW_ALIAS), versions=views)

    return await to_thread.run_sync(read)


@router.post("/models/{series_id}/versions/{version}/promote", response_model=Promotion,
             responses=errors(404, 422, 503))
async def promote(series_id: str, version: VersionPath, services: ServicesDep,
                  actor: ActorDep) -> Promotion:
    """Move `production` to this version; promoting an older version is a rollback."""
    require_series_id(series_id)
    return await services.models.promote(series_id, version, actor,
                                         request_id=correlation_id.get())


@router.post("/models/{series_id}/versions/{version}/shadow", response_model=ShadowView,
             responses=errors(404, 409, 422, 503))
async def start_shadow(series_id: str, version: VersionPath, services: ServicesDep,
                       actor: ActorDep) -> ShadowView:
    """Score live requests with this version beside production; decide automatically."""
    require_series_id(series_id)
    return await services.models.start_shadow(series_id, version, actor,
                                              request_id=correlation_id.get())


@router.get("/models/{series_id}/shadow", response_model=ShadowView,
            responses=errors(404, 422))
async def get_shadow(series_id: str, services: ServicesDep) -> ShadowView:
    """The series' latest shadow evaluation: agreement, latencies, status."""
    require_series_id(series_id)
    return await services.models.shadow_view(series_id)


@router.delete("/models/{series_id}/shadow", response_model=ShadowView,
               responses=errors(404, 422, 503))
async def stop_shadow(series_id: str, services: ServicesDep, actor: ActorDep) -> ShadowView:
    """End the evaluation without promoting; production is not touched."""
    require_series_id(series_id)
    await services.models.stop_shadow(series_id, actor)
    return await services.models.shadow_view(series_id)
