"""Each replica listens to `training.completed.*` on a queue of its own (exclusive,
auto-delete) and reloads the models that changed; a robust connection reconnects after a
broker outage, and the cache TTL bounds staleness while the broker is away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from pydantic import ValidationError

from core.contracts import TrainingEvent
from core.topology import EXCHANGE, declare_topology

log = logging.getLogger(__name__)

OnChange = Callable[[str, int | None], Awaitable[None]]


async def follow_completions(url: str, on_change: OnChange, retry_s: float = 5.0) -> None:
    """Run until cancelled; survives the broker being down at start or later."""
    while True:
        try:
            connection = await aio_pika.connect_robust(url, timeout=5)
            async with connection:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=64)
                await declare_topology(channel)
                queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                await queue.bind(EXCHANGE, "training.completed.*")
                log.info("following training.completed.* on %s", queue.name)
                async with queue.iterator() as messages:
                    async for message in messages:
                        async with message.process(ignore_processed=True):
                            await _handle(message.body, on_change)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker down: the TTL still bounds staleness
            log.warning("completion events unavailable (%s); retrying in %.0f s", exc, retry_s)
            await asyncio.sleep(retry_s)


async def _handle(body: bytes, on_change: OnChange) -> None:
    try:
        event = TrainingEvent.model_validate_json(body)
    except ValidationError as exc:
        log.warning("ignored an invalid completion event: %s", exc.errors()[0]["msg"])
        return
    try:
        await on_change(event.series_id, event.version)
    except Exception:  # the old model keeps serving; the TTL retries later
        log.exception("could not reload %s after its completion event", event.series_id)
