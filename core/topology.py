"""The RabbitMQ topology of the design, declared idempotently by every process that uses it.

Declaring a queue with other arguments than it already has is an error in RabbitMQ, so the
arguments live here and nowhere else.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from core.contracts import Priority
from core.naming import require_series_id

EXCHANGE = "training-events"
DEAD_LETTER_EXCHANGE = "training-dlx"
JOBS_QUEUE = "training-jobs"
PRIORITY_QUEUE = "training-priority-high"
DEAD_LETTER_QUEUE = "training-jobs-dlq"

JOB_KEY = "training.job.standard"
PRIORITY_JOB_KEY = "training.job.priority"
COMPLETED_PATTERN = "training.completed.#"

# Both job queues dead-letter to the same DLQ, so poison messages end up in one place.
JOB_QUEUE_ARGUMENTS = {
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
}


def job_routing_key(priority: Priority | str) -> str:
    return PRIORITY_JOB_KEY if Priority(priority) is Priority.HIGH else JOB_KEY


def completed_key(series_id: str) -> str:
    return f"training.completed.{require_series_id(series_id)}"


def failed_key(series_id: str) -> str:
    return f"training.failed.{require_series_id(series_id)}"


async def declare_topology(channel: AbstractChannel) -> AbstractExchange:
    """Declare exchanges, queues and bindings; return the `training-events` exchange."""
    events = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for name, key in ((JOBS_QUEUE, JOB_KEY), (PRIORITY_QUEUE, PRIORITY_JOB_KEY)):
        queue = await channel.declare_queue(name, durable=True, arguments=JOB_QUEUE_ARGUMENTS)
        await queue.bind(events, key)
    dead_letters = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
    await dead_letters.bind(dlx, DEAD_LETTER_QUEUE)
    return events
