"""Nothing accepted is lost: broker outages and API crashes only delay messages."""

from __future__ import annotations

import time

import httpx

from core.topology import JOBS_QUEUE
from tests.conftest import make_series
from tests.integration.queues import collect, counts
from tests.integration.services import wait_until


def submit(client: httpx.Client, prefix: str, n: int) -> set[str]:
    job_ids = set()
    for i in range(n):
        r = client.post(f"/fit/{prefix}_{i}", json={"training_data": make_series(seed=i)})
        assert r.status_code == 202, r.text
        job_ids.add(r.json()["job_id"])
    return job_ids


def broker_seen(client: httpx.Client, up: bool) -> None:
    wait_until(
        lambda: client.get("/health").json()["broker"] is up,
        30,
        f"API seeing the broker {'up' if up else 'down'}",
    )


async def test_fits_accepted_while_the_broker_is_down_arrive_once(
    client, rabbitmq, amqp, series_id
):
    await amqp.close()  # our own channel dies with the broker
    rabbitmq.stop()
    try:
        broker_seen(client, up=False)
        job_ids = submit(client, series_id, 12)
        health = client.get("/readiness")
        assert health.status_code == 200  # still takes fits: they wait in the outbox
        assert health.json()["status"] == "degraded"
        assert health.json()["outbox_backlog"] >= 12
    finally:
        rabbitmq.start()
    broker_seen(client, up=True)

    import aio_pika

    async with await aio_pika.connect(rabbitmq.url) as connection:
        found = await collect(await connection.channel(), JOBS_QUEUE, job_ids, timeout=60, settle=2)
    assert counts(found) == dict.fromkeys(job_ids, 1)
    assert client.get("/health").json()["outbox_backlog"] == 0


async def test_unsent_messages_survive_an_api_crash(client, api, rabbitmq, amqp, series_id):
    await amqp.close()
    rabbitmq.stop()
    try:
        broker_seen(client, up=False)
        job_ids = submit(client, series_id, 5)
        api.kill()  # SIGKILL: no shutdown hook runs
    finally:
        rabbitmq.start()
    started = time.monotonic()
    api.start()

    import aio_pika

    async with await aio_pika.connect(rabbitmq.url) as connection:
        found = await collect(await connection.channel(), JOBS_QUEUE, job_ids, timeout=60, settle=2)
    assert counts(found) == dict.fromkeys(job_ids, 1)
    assert time.monotonic() - started < 60
    for job_id in job_ids:
        assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"
