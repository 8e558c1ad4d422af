"""A Ray Serve replica killed under load: a request in flight fails at most once (its one
retry succeeds), and the replacement replica starts with its warm set of models."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.faults.tools import kill, pids_named
from tests.integration.test_serving import predict, register

pytestmark = [pytest.mark.integration, pytest.mark.faults]

WARM = 5  # WARMUP_MODELS of the serve fixture
REPLICA = "ServeReplica:serving:Predictor"


def test_a_replica_killed_under_load(serve, mlflow_server, series_id, record):
    names = [f"{series_id}_r{i}" for i in range(WARM + 1)]
    for i, name in enumerate(names):
        register(mlflow_server, name, seed=200 + i)
    with httpx.Client(base_url=serve.url, timeout=30) as http:
        assert all(predict(http, name, 0.3).status_code == 200 for name in names)  # local copies
        before = http.get("/health").json()["uptime_s"]

    attempts: list[tuple[int, int]] = []  # per request: (first answer, retry answer or 0)
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=serve.url, timeout=60) as http:
            while not stop.is_set():
                first = _status(http, names[0])
                retry = 0 if first == 200 else _status(http, names[0])
                attempts.append((first, retry))
                time.sleep(0.05)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    replicas = pids_named(REPLICA, serve.proc.pid)
    assert len(replicas) == 1, replicas
    kill(replicas)
    killed_at = time.monotonic()

    with httpx.Client(base_url=serve.url, timeout=60) as http:
        while True:  # the replacement's first health answer: models it warmed, not loaded on demand
            assert time.monotonic() - killed_at < 120, "no replica came back"
            try:
                health = http.get("/health").json()
            except httpx.HTTPError:
                health = {}
            if health.get("uptime_s", before + 1) < before and health.get("ready"):
                break
            time.sleep(0.2)
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(60)

    first_failures = sum(first != 200 for first, _ in attempts)
    twice = [a for a in attempts if a[0] != 200 and a[1] != 200]
    record(
        f"replica killed under load: {len(attempts)} requests, {first_failures} failed once "
        f"({dict(Counter(f for f, _ in attempts if f != 200))}), {len(twice)} failed twice; "
        f"replacement warm with {health['models_cached']} models, back in "
        f"{time.monotonic() - killed_at:.0f} s"
    )
    assert not twice
    assert health["models_cached"] >= WARM  # only names[0] is requested: the rest is warm-up
    assert pids_named(REPLICA, serve.proc.pid) != replicas


def _status(http: httpx.Client, name: str) -> int:
    try:
        return predict(http, name, 0.3).status_code
    except httpx.HTTPError:
        return -1
