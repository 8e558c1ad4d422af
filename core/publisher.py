"""Publishing to `training-events` with publisher confirms.

The connection is made lazily and kept robust (aio-pika reconnects it); a publish that
cannot be confirmed raises, and the caller (the outbox relay) tries again later.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from core.topology import declare_topology

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, url: str, confirm_timeout_s: float = 5.0) -> None:
        self._url = url
        self._timeout = confirm_timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _ensure_exchange(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is not None and self.connected:
                return self._exchange
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect_robust(self._url, timeout=self._timeout)
                log.info("connected to the broker")
            # Returned (unroutable) messages raise instead of vanishing.
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._exchange = await declare_topology(self._channel)
            return self._exchange

    async def connect(self) -> None:
        await self._ensure_exchange()

    async def publish(
        self, routing_key: str, body: bytes, message_id: str, mandatory: bool = True
    ) -> None:
        """Return once the broker confirmed the persistent message; raise otherwise.

        `mandatory`: a message no queue takes is an error (jobs), or fine (events that
        nobody happens to listen to)."""
        exchange = await self._ensure_exchange()
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(message, routing_key, mandatory=mandatory, timeout=self._timeout)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = self._exchange = None
