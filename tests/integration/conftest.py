"""Starts a real RabbitMQ node and the training API once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.integration.services import (
    Dagster,
    MlflowServer,
    MotoS3,
    PostgreSQL,
    RabbitMQ,
    RayServe,
    TrainingApi,
)

# ADP_TEST_PORT_OFFSET lets two test sessions share a machine (e.g. two checkouts).
_OFFSET = int(os.environ.get("ADP_TEST_PORT_OFFSET", "0"))
AMQP_PORT, MGMT_PORT, API_PORT, PG_PORT, S3_PORT = (
    p + _OFFSET for p in (5682, 15682, 8040, 5442, 5055)
)
MLFLOW_PORT, DAGSTER_PORT, SERVE_PORT = (p + _OFFSET for p in (5010, 3010, 8010))

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    # Not under pytest's tmp dir: that is private to root and the node runs as `rabbitmq`.
    base = Path(tempfile.mkdtemp(prefix="adp-test-rabbitmq-"))
    base.chmod(0o755)
    node = RabbitMQ(base, AMQP_PORT, MGMT_PORT)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def api(rabbitmq: RabbitMQ, state_dir: Path) -> Iterator[TrainingApi]:
    service = TrainingApi(
        state_dir,
        API_PORT,
        # MLFLOW_TRACKING_URI: where mlflow_server listens, without starting it for tests that
        # do not need it. A short body deadline, so the slow-body tests are quick.
        {"RABBITMQ_URL": rabbitmq.url, "OUTBOX_POLL_S": "0.2", "PUBLISH_TIMEOUT_S": "2",
         "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{MLFLOW_PORT}", "BODY_READ_TIMEOUT_S": "5"},
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def client(api: TrainingApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=30) as c:
        yield c


@pytest.fixture
async def amqp(rabbitmq: RabbitMQ) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        yield await connection.channel()


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    base = Path(tempfile.mkdtemp(prefix="adp-test-pg-"))
    base.chmod(0o755)
    server = PostgreSQL(base, PG_PORT)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto"), S3_PORT)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), MLFLOW_PORT)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pipeline_env(rabbitmq: RabbitMQ, mlflow_server: MlflowServer, state_dir: Path) -> dict:
    """What the pipeline processes share with the API: job store, data root, broker."""
    return {
        "STATE_DIR": str(state_dir),
        "RABBITMQ_URL": rabbitmq.url,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "SENSOR_INTERVAL_S": "1",
        # ~60 s of backoff: an MLflow restart on a busy machine fits inside it
        "TRAINING_RETRIES": "5",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


@pytest.fixture(scope="session")
def dagster(pipeline_env: dict, api: TrainingApi,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dagster]:
    instance = Dagster(tmp_path_factory.mktemp("dagster_home"), DAGSTER_PORT, pipeline_env)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def serve(rabbitmq: RabbitMQ, mlflow_server: MlflowServer, state_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServe]:
    """Ray Serve with a short breaker reset, so recovery is seen within a test; shadow
    counts go to the API's job store, as in the local stack."""
    base = tmp_path_factory.mktemp("serve")
    server = RayServe(base, SERVE_PORT, {
        "STATE_DIR": str(base),
        "RABBITMQ_URL": rabbitmq.url,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "BREAKER_RESET_S": "5",
        "JOB_STORE_URL": f"sqlite:///{state_dir / 'jobs.db'}",
        "WARMUP_MODELS": "5",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BODY_READ_TIMEOUT_S": "5",
    })
    try:
        server.start()
        yield server
    finally:
        server.stop()
