"""The locustfile as Locust's own loader sees it: profiles, weights, shape, checks, pacing."""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

# Importing locust would monkey-patch this whole pytest process for gevent; the variable is
# removed again so that processes the tests start (a Locust run among them) do not inherit it.
_SET_HERE = "LOCUST_SKIP_MONKEY_PATCH" not in os.environ
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
from locust.util.load_locustfile import load_locustfile  # noqa: E402

if _SET_HERE:
    del os.environ["LOCUST_SKIP_MONKEY_PATCH"]

from core.detectors import IsolationForestDetector, RobustDetector, StatisticalDetector  # noqa: E402
from serving.api import MAX_BODY_BYTES  # noqa: E402
from serving.scoring import ScoringModel, score_points  # noqa: E402

LOCUSTFILE = str(Path(__file__).resolve().parents[2] / "load_tests" / "locustfile.py")


def load(monkeypatch, profile: str | None = None):
    if profile is None:
        monkeypatch.delenv("LOAD_PROFILE", raising=False)
    else:
        monkeypatch.setenv("LOAD_PROFILE", profile)
    users, shapes = load_locustfile(LOCUSTFILE)
    import locustfile  # the module load_locustfile just executed

    return users, shapes, locustfile


@pytest.mark.parametrize(("profile", "users", "shapes"), [
    (None, {"MixedUser"}, []),
    ("mixed", {"MixedUser"}, []),
    ("stress", {"MixedUser"}, ["StressShape"]),
    ("anomaly", {"AnomalyUser"}, []),
])
def test_profile_selects_users_and_shape(monkeypatch, profile, users, shapes):
    found_users, found_shapes, _ = load(monkeypatch, profile)
    assert set(found_users) == users
    assert [type(s).__name__ for s in found_shapes] == shapes


def test_unknown_profile_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="LOAD_PROFILE"):
        load(monkeypatch, "soak")


def test_mixed_weights_are_70_25_5(monkeypatch):
    users, _, _ = load(monkeypatch, "mixed")
    names = [t.__name__ for t in users["MixedUser"].tasks]  # Locust repeats a task per weight
    assert {n: names.count(n) for n in set(names)} == {"single": 70, "batch": 25, "health": 5}


def test_batch_sizes_and_bodies(monkeypatch):
    _, _, lf = load(monkeypatch)
    rng = random.Random(0)
    sizes = [lf.pick_batch_size(rng) for _ in range(20_000)]
    assert set(sizes) == {*lf.BATCH_SIZES, lf.MAX_BATCH}
    assert 0.005 < sizes.count(lf.MAX_BATCH) / len(sizes) < 0.015
    bodies = lf.bodies()
    for n, variants in bodies["batch"].items():
        doc = orjson.loads(variants[0])
        assert len(doc["timestamps"]) == len(doc["values"]) == n
    assert len(orjson.loads(bodies["max"])["values"]) == 32_768
    assert len(bodies["max"]) < MAX_BODY_BYTES  # the largest batch is one the API accepts
    assert set(orjson.loads(bodies["single"][0])) == {"timestamp", "value"}


def test_stress_shape_steps_then_stops(monkeypatch):
    monkeypatch.setenv("LOAD_STRESS_STAGES", "3")
    _, shapes, _ = load(monkeypatch, "stress")
    shape = shapes[0]
    ticks = []
    for t in (0, 19.9, 20, 45, 59.9, 60):
        monkeypatch.setattr(shape, "get_run_time", lambda t=t: t)
        ticks.append(shape.tick())
    assert ticks == [(50, 50), (50, 50), (100, 50), (150, 50), (150, 50), None]
    assert shape.stages() == [(0, 20, 50), (20, 40, 100), (40, 60, 150)]


def test_pacing_keeps_a_fixed_schedule(monkeypatch):
    _, _, lf = load(monkeypatch)
    clock = [100.0]
    monkeypatch.setattr(lf.time, "monotonic", lambda: clock[0])
    user = SimpleNamespace(rate=4.0, due=100.0)  # a request every 0.25 s
    clock[0] = 100.05  # the first request took 50 ms
    assert lf.PacedUser.wait_time(user) == pytest.approx(0.2)
    clock[0] = 101.0  # a slow answer: the slots due at 100.5, 100.75 and 101 go at once
    assert [lf.PacedUser.wait_time(user) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lf.PacedUser.wait_time(user) == pytest.approx(0.25)  # then the schedule again


def _response(status: int, body) -> SimpleNamespace:
    content = orjson.dumps(body)
    return SimpleNamespace(status_code=status, content=content, text=content.decode())


def test_checks_name_what_is_wrong(monkeypatch):
    _, _, lf = load(monkeypatch)
    good = {"series_id": "s1", "anomaly": False, "model": {"name": "model_od_s1"}}
    assert lf.check_single(_response(200, good), "s1") is None
    assert "not this series" in lf.check_single(_response(200, good), "s2")
    assert lf.check_single(_response(503, {}), "s1").startswith("status 503")
    missing = {"error": {"code": "MODEL_NOT_FOUND"}}
    assert lf.check_no_model(_response(404, missing)) is None
    assert "expected 404" in lf.check_no_model(_response(200, good))
    batch = {"summary": {"points": 3}, "model": {"source": "baseline"},
             "results": {"anomaly": [False, True, False]}}
    assert lf.check_batch(_response(200, batch), 3, baseline=True) is None
    assert "scored by source 'baseline'" in lf.check_batch(_response(200, batch), 3, False)
    assert "summary" in lf.check_batch(_response(200, batch), 4, baseline=True)
    assert lf.check_flags(_response(200, batch), [False, True, False]) is None
    assert lf.check_flags(_response(200, batch), [True, False, False]) == (
        "1 injected anomaly not flagged, 1 normal point flagged")
    assert lf.check_flags(_response(200, good), [True]) == "1 injected anomaly not flagged"
    assert lf.check_health(_response(200, {"status": "degraded"})) is None
    assert lf.check_health(_response(200, {"status": "down"})) == "health status 'down'"


@pytest.mark.parametrize("detector", [StatisticalDetector(), RobustDetector(),
                                      IsolationForestDetector()])
def test_injected_values_are_the_anomalies_of_the_real_scoring(monkeypatch, detector):
    """The anomaly profile's rule (far outside expected_range / near its centre) agrees
    with serving's scoring of each algorithm."""
    _, _, lf = load(monkeypatch)
    values = 0.3 + 0.05 * np.random.default_rng(3).standard_normal(10_000)
    model = ScoringModel.from_detector(detector.fit(values), "m", 1, "registry")
    low, high = model.expected_range
    rng = random.Random(5)
    injected = np.array([lf.injected_value(low, high, rng) for _ in range(500)])
    normal = np.array([lf.normal_value(low, high, rng) for _ in range(500)])
    assert score_points(model, injected).anomaly.all()
    assert not score_points(model, normal).anomaly.any()


def test_catalog_from_file_and_env(monkeypatch, tmp_path):
    _, _, lf = load(monkeypatch)
    path = tmp_path / "series.json"
    path.write_text('{"series": ["a", "b"], "no_model": ["z"]}')
    monkeypatch.setenv("LOAD_SERIES_FILE", str(path))
    lf.catalog.cache_clear()
    assert lf.catalog() == lf.Catalog(("a", "b"), ("z",))
    monkeypatch.delenv("LOAD_SERIES_FILE")
    monkeypatch.setenv("LOAD_SERIES", "c, d,")
    lf.catalog.cache_clear()
    assert lf.catalog() == lf.Catalog(("c", "d"), ())
    lf.catalog.cache_clear()
