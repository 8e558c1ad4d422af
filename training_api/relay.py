"""The outbox relay: publishes committed outbox rows to RabbitMQ and marks them sent.

A fit commits its job and outbox row first; this task publishes afterwards, so a broker
outage or an API restart delays a message but never loses it. Delivery is at-least-once
(a confirm lost in a crash republishes); consumers deduplicate on the job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from anyio import to_thread

from core.jobstore import JobStore
from core.publisher import Publisher

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


class OutboxRelay:
    def __init__(self, store: JobStore, publisher: Publisher, poll_s: float, batch: int) -> None:
        self._store = store
        self._publisher = publisher
        self._poll_s = poll_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_error: str | None = None

    def notify(self) -> None:
        """Wake the relay now (safe from worker threads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = self._poll_s
        while True:
            try:
                # Connecting first declares the topology at start-up and keeps the
                # broker's health known even while there is nothing to publish.
                await self._publisher.connect()
                await self.drain()
                self.last_error = None
                backoff = self._poll_s
            except Exception as exc:  # broker or store down: keep the rows, retry later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "outbox relay could not publish; retrying in %.1f s: %s",
                    backoff,
                    self.last_error,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            self._wake.clear()

    async def drain(self) -> int:
        """Publish every pending row; return how many were sent."""
        sent = 0
        while rows := await to_thread.run_sync(self._store.pending_outbox, self._batch):
            # Confirms are awaited together: one round trip per batch, not per message.
            results = await asyncio.gather(
                *(self._publisher.publish(r.routing_key, r.body, r.job_id) for r in rows),
                return_exceptions=True,
            )
            confirmed = [r.id for r, res in zip(rows, results, strict=True) if res is None]
            await to_thread.run_sync(self._store.mark_sent, confirmed)
            sent += len(confirmed)
            if confirmed:
                log.info("published %d job message(s)", len(confirmed))
            failures = [res for res in results if isinstance(res, BaseException)]
            if failures:
                raise failures[0]
        return sent
