"""Starts a real RabbitMQ node and the training API once per test session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.integration.services import RabbitMQ, TrainingApi

AMQP_PORT, MGMT_PORT, API_PORT = 5682, 15682, 8040

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
        {"RABBITMQ_URL": rabbitmq.url, "OUTBOX_POLL_S": "0.2", "PUBLISH_TIMEOUT_S": "2"},
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
