"""Load tests of serving (Ray Serve): the mixed workload of the design, a stress ramp and an
anomaly-injection check.

    LOAD_PROFILE=mixed|stress|anomaly  locust -f load_tests/locustfile.py \\
        --host http://127.0.0.1:8000 --headless -u 100 -r 100 -t 60s

Profiles (`LOAD_PROFILE`, default `mixed`):

- **mixed**: 70 % single-point predictions, 25 % batches (100-1,000 points; 1 % of the batches
  hold 32,768, the API's maximum), 5 % `/health`, over every series uniformly.
- **stress**: the mixed users, added in steps by `StressShape` until past capacity.
- **anomaly**: points far outside a series' `expected_range` (injected anomalies) and points
  near its centre, single and in batches; a wrong flag is a failure.

Every user sends `LOAD_USER_RPS` requests per second (default 2) on a fixed schedule, whatever
the latency, so the offered rate is users × LOAD_USER_RPS (`-u 100` → 200 requests/s).

Series: `LOAD_SERIES_FILE` (JSON `{"series": [...], "no_model": [...]}`, as bench/load.py
writes it), else `LOAD_SERIES` / `LOAD_NO_MODEL_SERIES` (comma-separated), else every
`model_od_*` registered in the MLflow at `LOAD_MLFLOW_URI` (default the local stack's).
`no_model` series have no model on purpose: `LOAD_NO_MODEL_SHARE` (default 5 %) of the mixed
requests go to them, and the documented fallbacks are the expected answers there:
`404 MODEL_NOT_FOUND` for a single point, a `baseline` scoring (200) for a batch.

A request fails when its status or body is not the expected one; the failure message says
what was wrong (e.g. `injected anomaly not flagged`).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import orjson
from locust import FastHttpUser, LoadTestShape, task

PROFILES = ("mixed", "stress", "anomaly")
TS0 = 1_733_600_000  # timestamps of the points sent: a week after bench/stack.py's training
LEVEL, NOISE = 0.3, 0.05  # the values of the mixed workload (the flags are not checked there)
BATCH_SIZES = (100, 250, 500, 1000)
MAX_BATCH = 32_768
JSON = {"Content-Type": "application/json"}

# Request names: one row each in the statistics.
SINGLE, SINGLE_NO_MODEL = "/predict/{id}", "/predict/{id} [no model]"
BATCH, BATCH_BASELINE = "/predict/{id}/batch", "/predict/{id}/batch [baseline]"
HEALTH = "/health"
PROBE = "/predict/{id} [probe]"
INJECTED, NORMAL = "/predict/{id} [injected]", "/predict/{id} [normal]"
BATCH_INJECTED = "/predict/{id}/batch [injected]"


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def profile() -> str:
    chosen = os.environ.get("LOAD_PROFILE", "mixed")
    if chosen not in PROFILES:
        raise ValueError(f"LOAD_PROFILE must be one of {PROFILES}, got {chosen!r}")
    return chosen


PROFILE = profile()
USER_RPS = _env("LOAD_USER_RPS", 2)
NO_MODEL_SHARE = _env("LOAD_NO_MODEL_SHARE", 0.05)
MAX_BATCH_SHARE = _env("LOAD_MAX_BATCH_SHARE", 0.01)


# -- series ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    series: tuple[str, ...]  # with a production model
    no_model: tuple[str, ...] = ()  # known to have none


def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _from_registry(uri: str, limit: int = 1000) -> tuple[str, ...]:
    import httpx

    found: list[str] = []
    params: dict = {"max_results": 1000, "filter": "name LIKE 'model_od_%'"}
    while len(found) < limit:
        r = httpx.get(f"{uri}/api/2.0/mlflow/registered-models/search", params=params,
                      timeout=10, trust_env=False)
        r.raise_for_status()
        body = r.json()
        found += [m["name"].removeprefix("model_od_") for m in body.get("registered_models", [])
                  if m.get("aliases")]  # only models with an alias (production) serve
        if not body.get("next_page_token"):
            break
        params["page_token"] = body["next_page_token"]
    return tuple(found[:limit])


@lru_cache
def catalog() -> Catalog:
    """The series to load, read once per process (see the module's doc)."""
    if path := os.environ.get("LOAD_SERIES_FILE"):
        doc = orjson.loads(Path(path).read_bytes())
        found = Catalog(tuple(doc["series"]), tuple(doc.get("no_model", ())))
    elif series := os.environ.get("LOAD_SERIES"):
        found = Catalog(_split(series), _split(os.environ.get("LOAD_NO_MODEL_SERIES", "")))
    else:
        uri = os.environ.get("LOAD_MLFLOW_URI", "http://127.0.0.1:5000")
        found = Catalog(_from_registry(uri), _split(os.environ.get("LOAD_NO_MODEL_SERIES", "")))
    if not found.series:
        raise RuntimeError("no series with a model to load: set LOAD_SERIES_FILE or "
                           "LOAD_SERIES, or register models in LOAD_MLFLOW_URI")
    return found


# -- bodies (encoded once: the client's CPU goes to requests, not to JSON) --------------------


def _batch_body(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return orjson.dumps({"timestamps": TS0 + 300 * np.arange(n),
                         "values": LEVEL + NOISE * rng.standard_normal(n)},
                        option=orjson.OPT_SERIALIZE_NUMPY)


@lru_cache
def bodies() -> dict:
    rng = np.random.default_rng(1)
    singles = [orjson.dumps({"timestamp": TS0 + 300 * i, "value": float(v)})
               for i, v in enumerate(LEVEL + NOISE * rng.standard_normal(512))]
    batches = {n: [_batch_body(n, 10 * n + k) for k in range(4)] for n in BATCH_SIZES}
    return {"single": singles, "batch": batches, "max": _batch_body(MAX_BATCH, 0)}


def pick_batch_size(rng: random.Random) -> int:
    return MAX_BATCH if rng.random() < MAX_BATCH_SHARE else rng.choice(BATCH_SIZES)


# -- checks ----------------------------------------------------------------------------------


def _json(response) -> dict | None:
    try:
        return orjson.loads(response.content or b"")
    except orjson.JSONDecodeError:
        return None


def check_single(response, series_id: str) -> str | None:
    """None when the answer is right, else what is wrong (the failure message)."""
    if response.status_code != 200:
        return f"status {response.status_code}: {(response.text or '')[:200]}"
    body = _json(response)
    if body is None or body.get("series_id") != series_id:
        return "body is not this series' prediction"
    if body.get("model", {}).get("name") != f"model_od_{series_id}":
        return f"answered by model {body.get('model')}, not this series' own"
    if not isinstance(body.get("anomaly"), bool):
        return "no boolean anomaly flag"
    return None


def check_no_model(response) -> str | None:
    body = _json(response)
    code = (body or {}).get("error", {}).get("code")
    if response.status_code != 404 or code != "MODEL_NOT_FOUND":
        return f"expected 404 MODEL_NOT_FOUND, got {response.status_code} {code}"
    return None


def check_batch(response, points: int, baseline: bool) -> str | None:
    if response.status_code != 200:
        return f"status {response.status_code}: {(response.text or '')[:200]}"
    body = _json(response)
    if body is None or body.get("summary", {}).get("points") != points:
        return f"summary does not count the {points} points sent"
    source = body.get("model", {}).get("source")
    if (source == "baseline") != baseline:
        return f"scored by source {source!r}" + (", expected the baseline" if baseline else "")
    return None


def check_health(response) -> str | None:
    if response.status_code != 200:
        return f"status {response.status_code}"
    status = (_json(response) or {}).get("status")
    return None if status in ("ok", "degraded") else f"health status {status!r}"


def check_flags(response, expected: list[bool]) -> str | None:
    """The anomaly flags must be exactly the injected points."""
    if response.status_code != 200:
        return f"status {response.status_code}: {(response.text or '')[:200]}"
    body = _json(response) or {}
    flags = body.get("results", {}).get("anomaly") if "results" in body else [body.get("anomaly")]
    if flags is None or len(flags) != len(expected):
        return "no anomaly flags, or not one per point"
    missed = sum(e and not f for e, f in zip(expected, flags, strict=True))
    false = sum(f and not e for e, f in zip(expected, flags, strict=True))
    if missed or false:
        parts = [f"{missed} injected anomaly not flagged"] * bool(missed)
        parts += [f"{false} normal point flagged"] * bool(false)
        return ", ".join(parts)
    return None


def _report(response, problem: str | None) -> None:
    if problem is None:
        response.success()
    else:
        response.failure(problem)


# -- users -----------------------------------------------------------------------------------


class PacedUser(FastHttpUser):
    """`rate` requests per second on a fixed schedule, each user at a random phase: the
    offered rate stays users × rate whatever the latency (late requests catch up), and the
    users do not fire in lockstep."""

    abstract = True
    rate = USER_RPS

    def on_start(self) -> None:
        self.rng = random.Random()
        self.bodies = bodies()
        self.catalog = catalog()
        phase = self.rng.uniform(0, 1 / self.rate)
        self.due = time.monotonic() + phase
        time.sleep(phase)  # gevent's: the other users run meanwhile

    def wait_time(self) -> float:
        self.due += 1 / self.rate
        return max(0.0, self.due - time.monotonic())

    def post(self, path: str, body: bytes, name: str):
        return self.client.post(path, data=body, headers=JSON, name=name, catch_response=True)


class MixedUser(PacedUser):
    """70 % single points, 25 % batches, 5 % health (task weights)."""

    abstract = PROFILE not in ("mixed", "stress")

    def _series(self) -> tuple[str, bool]:
        """A series, and whether it is one without a model."""
        if self.catalog.no_model and self.rng.random() < NO_MODEL_SHARE:
            return self.rng.choice(self.catalog.no_model), True
        return self.rng.choice(self.catalog.series), False

    @task(70)
    def single(self) -> None:
        series_id, missing = self._series()
        body = self.rng.choice(self.bodies["single"])
        with self.post(f"/predict/{series_id}", body,
                       SINGLE_NO_MODEL if missing else SINGLE) as r:
            _report(r, check_no_model(r) if missing else check_single(r, series_id))

    @task(25)
    def batch(self) -> None:
        series_id, missing = self._series()
        n = pick_batch_size(self.rng)
        body = self.bodies["max"] if n == MAX_BATCH else self.rng.choice(self.bodies["batch"][n])
        with self.post(f"/predict/{series_id}/batch", body,
                       BATCH_BASELINE if missing else BATCH) as r:
            _report(r, check_batch(r, n, baseline=missing))

    @task(5)
    def health(self) -> None:
        with self.client.get("/health", name=HEALTH, catch_response=True) as r:
            _report(r, check_health(r))


# Expected range of each series, learnt from one probe per series and process.
_RANGES: dict[str, tuple[float, float]] = {}


def injected_value(low: float, high: float, rng: random.Random) -> float:
    """Two to ten range widths beyond the expected range, on either side."""
    width = high - low
    k = rng.uniform(2, 10) * width
    return high + k if rng.random() < 0.5 else low - k


def normal_value(low: float, high: float, rng: random.Random) -> float:
    """Within a tenth of the range's half width from its centre: never an anomaly."""
    half = (high - low) / 2
    return low + half + rng.uniform(-0.1, 0.1) * half


class AnomalyUser(PacedUser):
    """Injected anomalies and normal points, whose flags are checked."""

    abstract = PROFILE != "anomaly"
    batch_points = 500
    injected_share = 0.02

    def _range(self) -> tuple[str, tuple[float, float]] | None:
        series_id = self.rng.choice(self.catalog.series)
        if series_id not in _RANGES:
            body = orjson.dumps({"timestamp": TS0, "value": LEVEL})
            with self.post(f"/predict/{series_id}", body, PROBE) as r:
                problem = check_single(r, series_id)
                _report(r, problem)
                if problem is not None:
                    return None
                expected = orjson.loads(r.content)["expected_range"]
                _RANGES[series_id] = (float(expected["low"]), float(expected["high"]))
        return series_id, _RANGES[series_id]

    def _single(self, injected: bool) -> None:
        found = self._range()
        if found is None:
            return
        series_id, (low, high) = found
        value = (injected_value if injected else normal_value)(low, high, self.rng)
        body = orjson.dumps({"timestamp": TS0, "value": value})
        with self.post(f"/predict/{series_id}", body, INJECTED if injected else NORMAL) as r:
            problem = check_single(r, series_id) or check_flags(r, [injected])
            _report(r, problem)

    @task(2)
    def single_injected(self) -> None:
        self._single(injected=True)

    @task(2)
    def single_normal(self) -> None:
        self._single(injected=False)

    @task(1)
    def batch_injected(self) -> None:
        found = self._range()
        if found is None:
            return
        series_id, (low, high) = found
        n = self.batch_points
        expected = [self.rng.random() < self.injected_share for _ in range(n)]
        values = [injected_value(low, high, self.rng) if e else normal_value(low, high, self.rng)
                  for e in expected]
        body = orjson.dumps({"timestamps": list(range(TS0, TS0 + 300 * n, 300)),
                             "values": values})
        with self.post(f"/predict/{series_id}/batch", body, BATCH_INJECTED) as r:
            _report(r, check_batch(r, n, baseline=False) or check_flags(r, expected))


class StressShape(LoadTestShape):
    """Steps of mixed users until past capacity: `LOAD_STRESS_START_USERS` (50), then
    `LOAD_STRESS_STEP_USERS` (50) more every `LOAD_STRESS_STEP_S` (20 s), for
    `LOAD_STRESS_STAGES` (8) stages: 100 → 800 requests/s at 2 per user."""

    abstract = PROFILE != "stress"

    def __init__(self) -> None:
        super().__init__()
        self.start_users = int(_env("LOAD_STRESS_START_USERS", 50))
        self.step_users = int(_env("LOAD_STRESS_STEP_USERS", 50))
        self.step_s = _env("LOAD_STRESS_STEP_S", 20)
        self.n_stages = int(_env("LOAD_STRESS_STAGES", 8))

    def stages(self) -> list[tuple[float, float, int]]:
        """(start s, end s, users) of each stage."""
        return [(i * self.step_s, (i + 1) * self.step_s, self.start_users + i * self.step_users)
                for i in range(self.n_stages)]

    def tick(self) -> tuple[int, float] | None:
        stage = int(self.get_run_time() // self.step_s)
        if stage >= self.n_stages:
            return None
        # All of a stage's new users start within a second.
        return self.start_users + stage * self.step_users, max(self.step_users, 1)
