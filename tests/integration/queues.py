"""Reading what the API put on the broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage


async def collect(
    channel: AbstractChannel,
    queue: str,
    job_ids: set[str],
    timeout: float = 30,
    settle: float = 1.0,
) -> dict[str, list[AbstractIncomingMessage]]:
    """Take messages from `queue` until every job id was seen, then `settle` seconds more
    (to catch duplicates). Messages of other jobs are acknowledged and dropped."""
    q = await channel.get_queue(queue, ensure=True)
    found: dict[str, list[AbstractIncomingMessage]] = {}
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    while time.monotonic() < (settle_until or deadline):
        message = await q.get(no_ack=False, fail=False)
        if message is None:
            if settle_until is None and job_ids <= found.keys():
                settle_until = time.monotonic() + settle
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        if message.message_id in job_ids:
            found.setdefault(message.message_id, []).append(message)
    return found


def counts(found: dict[str, list[AbstractIncomingMessage]]) -> Counter:
    return Counter({job_id: len(msgs) for job_id, msgs in found.items()})
