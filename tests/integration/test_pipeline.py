"""A fit becomes a registered, versioned model through a real Dagster instance."""

from __future__ import annotations

import time

import aio_pika
import httpx
from mlflow import MlflowClient

from core.contracts import TrainingEvent
from core.topology import COMPLETED_PATTERN, EXCHANGE
from tests.conftest import make_series


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


async def test_fit_to_registered_model_with_alias_and_event(client, dagster, mlflow_server,
                                                           rabbitmq, series_id):
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        channel = await connection.channel()
        events = await channel.declare_queue(exclusive=True)
        await events.bind(EXCHANGE, COMPLETED_PATTERN)

        r = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=5),
                                                   "config": {"algorithm": "robust"}})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["model_version"] == 1 and job["run_id"] and job["dagster_run_id"]

        registry = MlflowClient(mlflow_server.url)
        name = f"model_od_{series_id}"
        production = registry.get_model_version_by_alias(name, "production")
        assert int(production.version) == 1
        assert production.tags["job_id"] == job["job_id"]
        assert production.tags["data_sha256"] == job["data_sha256"]
        assert production.tags["algorithm"] == "robust"
        run = registry.get_run(production.run_id)
        assert run.data.tags["series_id"] == series_id
        assert run.data.metrics["points"] == 10_000
        assert "anomaly_rate" in run.data.metrics and "p99" in run.data.metrics

        deadline = time.monotonic() + 30
        seen = None
        while seen is None and time.monotonic() < deadline:
            message = await events.get(no_ack=True, fail=False)
            if message is None:
                await __import__("asyncio").sleep(0.2)
                continue
            event = TrainingEvent.model_validate_json(message.body)
            if event.series_id == series_id:
                seen = (message.routing_key, event)
        assert seen is not None, "no completion event"
        key, event = seen
        assert key == f"training.completed.{series_id}"
        assert event.version == 1 and str(event.job_id) == job["job_id"]
        assert event.model_name == name and event.run_id == production.run_id


def runs_with_tag(dagster, key: str, value: str) -> list[dict]:
    data = dagster.graphql(
        """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) {
             ... on Runs { results { runId status tags { key value } } } } }""",
        {"filter": {"tags": [{"key": key, "value": value}]}},
    )
    return data["runsOrError"]["results"]


def versions_of(mlflow_server, series_id: str) -> list[int]:
    found = MlflowClient(mlflow_server.url).search_model_versions(f"name='model_od_{series_id}'")
    return sorted(int(v.version) for v in found)


def outbox_message(state_dir, job_id: str) -> bytes:
    import sqlite3

    with sqlite3.connect(state_dir / "jobs.db") as db:
        (body,) = db.execute("SELECT body FROM outbox WHERE job_id = ?", (job_id,)).fetchone()
    return body


async def publish_raw(rabbitmq, body: bytes, message_id: str,
                      key: str = "training.job.standard") -> None:
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        await exchange.publish(aio_pika.Message(body, message_id=message_id,
                                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                               key)


async def test_a_message_delivered_twice_trains_once(client, dagster, mlflow_server, rabbitmq,
                                                     state_dir, series_id):
    job_id = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=6)}).json()[
        "job_id"]
    body = outbox_message(state_dir, job_id)
    await publish_raw(rabbitmq, body, job_id)  # a redelivery racing the original
    assert wait_job(client, job_id)["status"] == "succeeded"
    await publish_raw(rabbitmq, body, job_id)  # and one after training
    time.sleep(4)  # a few sensor ticks
    assert len(runs_with_tag(dagster, "dagster/run_key", job_id)) == 1
    assert versions_of(mlflow_server, series_id) == [1]
    rabbitmq.wait_queue_empty("training-jobs")


async def test_a_poison_message_is_dead_lettered_and_does_not_block(client, dagster, rabbitmq,
                                                                    amqp, series_id):
    poison_id = f"poison-{series_id}"
    await publish_raw(rabbitmq, b'{"schema_version": 2, "job_id": "x"}', poison_id)
    await publish_raw(rabbitmq, b"not json at all", poison_id + "-2")
    job_id = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=7)}).json()[
        "job_id"]
    assert wait_job(client, job_id)["status"] == "succeeded"
    from tests.integration.queues import collect

    found = await collect(amqp, "training-jobs-dlq", {poison_id, poison_id + "-2"})
    assert {k: len(v) for k, v in found.items()} == {poison_id: 1, poison_id + "-2": 1}
    assert found[poison_id][0].headers["x-death"][0]["reason"] == "rejected"
    log = dagster.daemon.log_path.read_text() + dagster.webserver.log_path.read_text()
    assert "dead-lettering message " + poison_id in log
