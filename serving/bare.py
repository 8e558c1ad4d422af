"""The same app without Ray, on plain uvicorn: `uvicorn serving.bare:app` (the benchmark's
baseline, and a way to run serving on a laptop without Ray)."""

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from core.settings import get_settings
from serving.runtime import attach_service, new_app, start_background, stop_background

app = new_app()


@contextlib.asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    service = attach_service(get_settings())
    tasks = start_background(service)
    try:
        yield
    finally:
        await stop_background(tasks)


app.router.lifespan_context = _lifespan
