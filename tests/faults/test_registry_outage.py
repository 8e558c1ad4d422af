"""MLflow stopped for 60 s under a steady prediction load: cached series keep answering,
uncached ones get 503 at once, the breaker opens and closes again, nothing waits long."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest

from core.settings import Settings
from tests.integration.test_serving import predict, register

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_S = 60


class Load:
    """Steady requests on a set of series, each answer recorded with the phase it fell in."""

    def __init__(self, url: str, phase: list[str]) -> None:
        self.url, self.phase, self.stop = url, phase, threading.Event()
        self.answers: list[tuple[str, str, int, str, float]] = []
        self.breaker: list[tuple[str, str]] = []
        self.threads: list[threading.Thread] = []

    def run(self, kind: str, names: list[str], pause: float = 0.1) -> None:
        def loop() -> None:
            with httpx.Client(base_url=self.url, timeout=30) as http:
                i = 0
                while not self.stop.is_set():
                    phase, name = self.phase[0], names[i % len(names)]
                    started = time.perf_counter()
                    r = predict(http, name, 0.3)
                    code = r.json().get("error", {}).get("code", "")
                    self.answers.append(
                        (phase, kind, r.status_code, code, time.perf_counter() - started)
                    )
                    i += 1
                    time.sleep(pause)

        self._start(loop)

    def watch_breaker(self) -> None:
        def loop() -> None:
            with httpx.Client(base_url=self.url, timeout=30) as http:
                while not self.stop.is_set():
                    self.breaker.append((self.phase[0], http.get("/health").json()["breaker"]))
                    time.sleep(0.2)

        self._start(loop)

    def _start(self, fn) -> None:
        thread = threading.Thread(target=fn, daemon=True)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def of(self, phase: str, kind: str) -> list[tuple[int, str, float]]:
        return [(s, c, t) for p, k, s, c, t in self.answers if p == phase and k == kind]


def test_registry_down_for_60_s_under_prediction_load(serve, mlflow_server, series_id, record):
    cached = [f"{series_id}_c{i}" for i in range(5)]
    uncached = [f"{series_id}_u{i}" for i in range(5)]
    for i, name in enumerate(cached + uncached):
        register(mlflow_server, name, seed=100 + i)
    with httpx.Client(base_url=serve.url, timeout=30) as http:
        assert all(predict(http, name, 0.3).status_code == 200 for name in cached)

    phase = ["before"]
    load = Load(serve.url, phase)
    load.run("cached", cached)
    load.watch_breaker()
    time.sleep(5)
    phase[0] = "outage"
    mlflow_server.stop()
    load.run("uncached", uncached)
    try:
        time.sleep(OUTAGE_S)
    finally:
        phase[0] = "after"
        mlflow_server.start()
    deadline = time.monotonic() + 60  # breaker reset, then one trial load
    with httpx.Client(base_url=serve.url, timeout=30) as http:
        while predict(http, uncached[0], 0.3).status_code != 200:
            assert time.monotonic() < deadline, "uncached series never recovered"
            time.sleep(0.5)
    time.sleep(3)
    load.finish()

    timeout = Settings().registry_timeout_s
    latency = {
        p: np.percentile([t for _, _, t in load.of(p, "cached")], 95) for p in ("before", "outage")
    }
    outage_uncached = Counter((s, c) for s, c, _ in load.of("outage", "uncached"))
    cached_status = Counter(
        s for p in ("before", "outage", "after") for s, _, _ in load.of(p, "cached")
    )
    states = [s for p, s in load.breaker if p == "outage"]
    record(
        f"registry down {OUTAGE_S} s: cached answers {dict(cached_status)} "
        f"(p95 {latency['before'] * 1000:.1f} ms before, {latency['outage'] * 1000:.1f} ms "
        f"during), uncached during the outage {dict(outage_uncached)}, breaker during "
        f"{dict(Counter(states))}, slowest answer "
        f"{max(t for *_, t in load.answers) * 1000:.0f} ms"
    )

    assert set(cached_status) == {200}
    assert latency["outage"] <= max(3 * latency["before"], 0.1)
    assert set(outage_uncached) == {(503, "REGISTRY_UNAVAILABLE")}
    assert max(t for *_, t in load.answers) < timeout + 0.5
    opened = states.index("open")  # the breaker opened during the outage ...
    assert "closed" not in states[opened:]  # ... and stayed open or half-open until it ended
    assert [s for p, s in load.breaker if p == "after"][-1] == "closed"
    assert Counter(s for s, _, _ in load.of("after", "uncached"))[200] > 0
