"""RabbitMQ for the pipeline: the sensor's bounded reads and the runs' training events.

Dagster sensors and ops are synchronous; each call here runs its own short asyncio loop
with one connection, so nothing is left open between ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from core.contracts import TrainingEvent
from core.publisher import Publisher
from core.topology import completed_key, declare_topology, failed_key

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    ACK = "ack"  # done with: its run exists, or it needs no run
    REQUEUE = "requeue"  # keep it: it is acknowledged once its run exists
    DEAD_LETTER = "dead_letter"  # poison: to training-jobs-dlq


@dataclass
class Delivery:
    queue: str
    body: bytes
    message_id: str | None
    outcome: Outcome = Outcome.REQUEUE
    reason: str = ""
    _message: AbstractIncomingMessage | None = field(default=None, repr=False)


class Broker:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publisher: Publisher | None = None

    def process(
        self, queues: Sequence[str], limit: int, decide: Callable[[list[Delivery]], None]
    ) -> list[Delivery]:
        """Take up to `limit` messages (queues in order), let `decide` set each outcome,
        then settle them all. A crash before settling returns them to the queue."""
        return asyncio.run(self._process(queues, limit, decide))

    async def _process(
        self, queues: Sequence[str], limit: int, decide: Callable[[list[Delivery]], None]
    ) -> list[Delivery]:
        connection = await aio_pika.connect(self.url, timeout=self.timeout_s)
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel)
            deliveries: list[Delivery] = []
            for name in queues:
                queue = await channel.get_queue(name)
                while len(deliveries) < limit:
                    message = await queue.get(no_ack=False, fail=False, timeout=self.timeout_s)
                    if message is None:
                        break
                    deliveries.append(
                        Delivery(name, message.body, message.message_id, _message=message)
                    )
            decide(deliveries)
            for delivery in deliveries:
                message = delivery._message
                if delivery.outcome is Outcome.ACK:
                    await message.ack()
                elif delivery.outcome is Outcome.DEAD_LETTER:
                    log.warning(
                        "dead-lettering message %s from %s: %s",
                        delivery.message_id,
                        delivery.queue,
                        delivery.reason,
                    )
                    await message.reject(requeue=False)
                else:
                    await message.nack(requeue=True)
            return deliveries

    def publish_event(self, event: TrainingEvent) -> None:
        """Publish with a confirm. A run publishes one event per model, so the connection
        (and the topology declared with it) is kept for the process on a loop of its own;
        a connection that went stale while idle is replaced once."""
        key = (
            completed_key(event.series_id)
            if event.event == "completed"
            else failed_key(event.series_id)
        )
        body, message_id = event.model_dump_json().encode(), str(event.job_id)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        for attempt in (1, 2):
            if self._publisher is None:
                self._publisher = Publisher(self.url, self.timeout_s)
            try:
                self._loop.run_until_complete(
                    self._publisher.publish(key, body, message_id, mandatory=False)
                )
                return
            except Exception:
                stale, self._publisher = self._publisher, None
                with contextlib.suppress(Exception):
                    self._loop.run_until_complete(stale.close())
                if attempt == 2:
                    raise
