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
    # Sensors run in the code server, which logs the reason.
    log = "".join(p.log_path.read_text() for p in (dagster.code, dagster.daemon, dagster.webserver))
    assert "dead-lettering message " + poison_id in log


def assign_run_key(state_dir, job_id: str) -> None:
    """What a sensor tick writes before the daemon creates the run."""
    import sqlite3

    with sqlite3.connect(state_dir / "jobs.db") as db:
        db.execute("UPDATE jobs SET run_key = ? WHERE job_id = ?", (job_id, job_id))


def test_daemon_stopped_between_taking_a_message_and_creating_its_run(
    client, dagster, mlflow_server, rabbitmq, state_dir, series_id
):
    dagster.daemon.stop()
    try:
        job_id = client.post(f"/fit/{series_id}",
                             json={"training_data": make_series(seed=8)}).json()["job_id"]
        time.sleep(1)  # published by the relay, nobody consumes it
        assign_run_key(state_dir, job_id)  # the tick got this far, then the daemon died
    finally:
        dagster.daemon.start()
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded"
    time.sleep(3)
    assert len(runs_with_tag(dagster, "dagster/run_key", job_id)) == 1
    assert versions_of(mlflow_server, series_id) == [1]
    rabbitmq.wait_queue_empty("training-jobs")


def test_daemon_killed_during_a_burst_loses_and_duplicates_nothing(
    client, dagster, mlflow_server, series_id
):
    job_ids = {}
    for i in range(6):
        sid = f"{series_id}_{i}"
        job_ids[sid] = client.post(f"/fit/{sid}", json={"training_data": make_series(seed=40 + i)}
                                   ).json()["job_id"]
        if i in (1, 4):
            dagster.daemon.kill()
            dagster.daemon.start()
    for sid, job_id in job_ids.items():
        assert wait_job(client, job_id, timeout=240)["status"] == "succeeded"
        assert versions_of(mlflow_server, sid) == [1]


def test_mlflow_down_during_training_is_retried_until_it_is_back(client, dagster, mlflow_server,
                                                                 series_id):
    mlflow_server.stop()
    try:
        job_id = client.post(f"/fit/{series_id}",
                             json={"training_data": make_series(seed=9)}).json()["job_id"]
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.5)
        time.sleep(3)  # at least one attempt fails against the stopped server
    finally:
        mlflow_server.start()
    job = wait_job(client, job_id, timeout=180)
    assert job["status"] == "succeeded", job
    assert versions_of(mlflow_server, series_id) == [1]


def test_mlflow_down_for_good_fails_the_job_with_a_reason(client, dagster, mlflow_server,
                                                          series_id):
    mlflow_server.stop()
    try:
        started = time.monotonic()
        job_id = client.post(f"/fit/{series_id}",
                             json={"training_data": make_series(seed=10)}).json()["job_id"]
        job = wait_job(client, job_id, timeout=240)
        elapsed = time.monotonic() - started
    finally:
        mlflow_server.start()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "REGISTRY_UNAVAILABLE"
    assert "MLflow unreachable" in job["error"]["message"]
    assert elapsed < 200  # retried with backoff for about a minute, then gave up: no hang


LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def rerun_partition(dagster, series_id: str) -> str:
    """Launch a partition's materialization the way the UI's Materialize button does."""
    data = dagster.graphql(LAUNCH, {"executionParams": {
        "selector": {"repositoryLocationName": "pipelines", "repositoryName": "__repository__",
                     "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["anomaly_model"]}]},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": series_id}]},
        "runConfigData": "{}",
    }})["launchRun"]
    assert data["__typename"] == "LaunchRunSuccess", data
    run_id = data["run"]["runId"]
    deadline = time.monotonic() + 180
    status = None
    while time.monotonic() < deadline:
        status = dagster.graphql(
            'query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }',
            {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS", f"rerun {run_id} ended {status}: {run_errors(dagster, run_id)}"
    return run_id


def run_errors(dagster, run_id: str) -> list[str]:
    events = dagster.graphql(
        """query Events($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
             __typename ... on MessageEvent { message }
             ... on ExecutionStepFailureEvent { error { message } } } } } }""",
        {"id": run_id})["logsForRun"]["events"]
    return [e.get("error", {}).get("message") or e["message"] for e in events
            if "Failure" in e["__typename"]]


def test_a_ui_rerun_makes_a_new_version_only_when_the_data_changed(
    client, dagster, mlflow_server, state_dir, series_id
):
    import numpy as np

    from core.storage import LocalDataStore, to_frame

    job_id = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=11)}
                         ).json()["job_id"]
    assert wait_job(client, job_id)["status"] == "succeeded"

    rerun_partition(dagster, series_id)  # same data, same config
    assert versions_of(mlflow_server, series_id) == [1]

    newer = make_series(seed=12)  # data that arrived without a fit, two weeks later
    ts = np.array(newer["timestamps"]) + 300 * 4032
    LocalDataStore(state_dir / "data").write(series_id, __import__("uuid").uuid4(),
                                             to_frame(ts, np.array(newer["values"])))
    rerun_partition(dagster, series_id)
    assert versions_of(mlflow_server, series_id) == [1, 2]
    production = MlflowClient(mlflow_server.url).get_model_version_by_alias(
        f"model_od_{series_id}", "production")
    assert production.version == "2" and production.tags["job_id"] == ""
