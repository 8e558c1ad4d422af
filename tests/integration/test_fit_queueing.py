"""A fit is durably queued on the real broker with the design's topology and contract."""

from __future__ import annotations

import aio_pika
import httpx

from core.contracts import JobMessage
from core.hashing import data_sha256
from core.topology import DEAD_LETTER_QUEUE, JOBS_QUEUE, PRIORITY_QUEUE
from tests.conftest import make_series
from tests.integration.queues import collect, counts


def fit(client: httpx.Client, series_id: str, **extra) -> httpx.Response:
    return client.post(f"/fit/{series_id}", json={"training_data": make_series(), **extra})


async def test_a_fit_puts_exactly_one_contract_message_on_training_jobs(client, amqp, series_id):
    body = {
        "training_data": make_series(seed=3),
        "config": {"algorithm": "robust", "window_hours": 72},
        "metadata": {"triggered_by": "test", "tags": ["x"]},
    }
    r = client.post(f"/fit/{series_id}", json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "queued" and accepted["series_id"] == series_id
    assert accepted["status_url"] == f"/jobs/{accepted['job_id']}"

    found = await collect(amqp, JOBS_QUEUE, {accepted["job_id"]})
    assert counts(found) == {accepted["job_id"]: 1}
    message = found[accepted["job_id"]][0]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.routing_key == "training.job.standard"

    contract = JobMessage.model_validate_json(message.body)
    assert str(contract.job_id) == accepted["job_id"]
    assert contract.schema_version == 1
    assert contract.series_id == series_id
    assert contract.points == 10_000
    assert contract.config.algorithm == "robust" and contract.config.window_hours == 72
    assert contract.config.hyperparameters == {"threshold_sigma": 3.5}
    assert contract.metadata.triggered_by == "test" and contract.metadata.priority == "normal"
    import numpy as np

    ts = np.array(body["training_data"]["timestamps"])
    vs = np.array(body["training_data"]["values"])
    assert contract.data_sha256 == data_sha256(ts, vs)

    # The claim check points at the stored Parquet file holding exactly the points sent.
    import polars as pl

    stored = pl.read_parquet(contract.data_uri.removeprefix("file://"))
    assert stored.schema == pl.Schema({"timestamp": pl.Int64, "value": pl.Float64})
    np.testing.assert_array_equal(stored["timestamp"].to_numpy(), ts)
    np.testing.assert_array_equal(stored["value"].to_numpy(), vs)


async def test_priority_high_goes_to_the_priority_queue(client, amqp, series_id):
    r = fit(client, series_id, metadata={"priority": "high"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    found = await collect(amqp, PRIORITY_QUEUE, {job_id})
    assert counts(found) == {job_id: 1}
    assert found[job_id][0].routing_key == "training.job.priority"


async def test_a_rejected_message_lands_in_the_dead_letter_queue(client, amqp, series_id):
    job_id = fit(client, series_id).json()["job_id"]
    queue = await amqp.get_queue(JOBS_QUEUE)
    for _ in range(200):
        message = await queue.get(no_ack=False, fail=False, timeout=5)
        if message is None:
            import asyncio

            await asyncio.sleep(0.05)
            continue
        if message.message_id == job_id:
            await message.reject(requeue=False)
            break
        await message.ack()
    else:
        raise AssertionError("the job message never arrived")

    found = await collect(amqp, DEAD_LETTER_QUEUE, {job_id})
    assert counts(found) == {job_id: 1}
    death = found[job_id][0].headers["x-death"][0]
    assert death["queue"] == JOBS_QUEUE and death["reason"] == "rejected"
