"""What the routes depend on, as `Annotated` aliases; built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from core.catalog import Catalog
from core.jobstore import JobStore
from core.publisher import Publisher
from core.settings import Settings
from core.storage import TrainingDataStore
from training_api.fits import FitService
from training_api.metrics import ApiMetrics
from training_api.models import ModelManager
from training_api.ratelimit import FitRateLimiter
from training_api.registry import ModelRegistry
from training_api.relay import OutboxRelay


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    fits: FitService
    limiter: FitRateLimiter
    publisher: Publisher
    relay: OutboxRelay
    metrics: ApiMetrics
    started_at: float
    data: TrainingDataStore
    catalog: Catalog
    registry: ModelRegistry
    models: ModelManager


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]
