"""Agreement accounting: the decision rule, a replica's counts, the shared evaluation rows."""

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from core.jobstore import JobStore
from core.shadows import ShadowCounts, ShadowStore, decide
from serving.metrics import ServingMetrics
from serving.shadow import ShadowScorer


@pytest.mark.parametrize(("points", "agreements", "expected"), [
    (999, 999, None),  # too few points: no decision yet, however good
    (999, 0, None),
    (1000, 950, "promote"),  # exactly 95 %
    (1000, 949, "drop"),
    (5000, 5000, "promote"),
    (1200, 0, "drop"),
])
def test_decision_rule(points, agreements, expected):
    assert decide(points, agreements, 1000, 0.95) == expected


def test_counts_add_and_merge():
    a, b = ShadowCounts(), ShadowCounts()
    a.add(10, 9, 0.001, 0.002)
    a.add(1, 1, 0.001, 0.001)
    b.add(5, 0, 0.5, 0.25)
    a.merge(b)
    assert (a.points, a.agreements, a.requests) == (16, 10, 3)
    assert a.production_seconds == pytest.approx(0.502)
    assert a.shadow_seconds == pytest.approx(0.253)


@pytest.fixture
def shadows(tmp_path) -> ShadowStore:
    jobs = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    jobs.create_schema()
    return ShadowStore(jobs)


def test_two_replicas_add_up_and_one_api_replica_decides(shadows):
    first = shadows.start("s1", 3, 2, "alice")
    one, two = ShadowCounts(), ShadowCounts()
    one.add(600, 600, 0.01, 0.02)
    two.add(500, 480, 0.01, 0.02)
    shadows.add_counts([("s1", 3, one)])
    shadows.add_counts([("s1", 3, two), ("s1", 99, one)])  # a stale version is not counted
    assert shadows.open_versions() == {"s1": 3}
    (row,) = shadows.ready(1000)
    assert (row.id, row.points, row.agreements, row.requests) == (first, 1100, 1080, 2)
    assert shadows.move(first, "evaluating", "deciding")
    assert not shadows.move(first, "evaluating", "deciding")  # a second API replica loses
    assert shadows.ready(1000) == []
    assert shadows.move(first, "deciding", "promoted", "agreement 0.98")
    assert shadows.open_versions() == {}
    latest = shadows.latest("s1")
    assert latest.status == "promoted" and latest.decided_at and latest.reason


def test_a_new_shadow_replaces_the_open_one(shadows):
    shadows.start("s1", 3, 2, "alice")
    shadows.start("s1", 4, 2, "bob")
    assert shadows.open_versions() == {"s1": 4}
    assert shadows.latest("s1").version == 4
    assert shadows.stop("s1", "stopped", "by hand")
    assert not shadows.stop("s1", "stopped", "twice")
    assert shadows.open_versions() == {}


async def test_scorer_counts_agreement_per_point_and_flushes(shadows):
    shadows.start("s1", 3, 2, "alice")
    metrics = ServingMetrics(CollectorRegistry())
    scorer = ShadowScorer(shadows, None, metrics, sync_s=1)  # type: ignore[arg-type]
    await scorer.sync()
    assert scorer.active == {"s1": 3}
    production = np.array([True, False, False, True])
    scorer.record("s1", 3, production, np.array([True, False, True, False]), 0.001, 0.003)
    scorer.record("s1", 3, production[:1], production[:1], 0.001, 0.001)
    await scorer.sync()
    row = shadows.latest("s1")
    assert (row.points, row.agreements, row.requests) == (5, 3, 2)
    assert row.shadow_seconds == pytest.approx(0.004)
    assert metrics.registry.get_sample_value("shadow_points_total", {"series_id": "s1"}) == 5
    shadows.stop("s1", "stopped", "done")
    await scorer.sync()
    assert scorer.active == {}
    assert metrics.registry.get_sample_value("shadow_points_total", {"series_id": "s1"}) is None
    await asyncio.sleep(0)


async def test_observe_returns_at_once_and_scores_the_shadow_later(shadows):
    """A shadow still loading never holds up the production answer."""
    from types import SimpleNamespace

    from core.detectors import StatisticalDetector
    from serving.scoring import ScoringModel, score_points

    values = np.array([0.0, 0.1, 5.0, -5.0])
    prod = ScoringModel.from_detector(StatisticalDetector(3.0).fit(np.r_[values, np.zeros(50)]),
                                      "m", 2, "registry")
    cand = ScoringModel.from_detector(StatisticalDetector(3.0).fit(np.linspace(-9, 9, 50)),
                                      "m", 3, "registry")
    released = asyncio.Event()

    async def slow_load(series_id, version):
        await released.wait()  # the registry is slow today
        return SimpleNamespace(model=cand, version=version)

    shadows.start("s1", 3, 2, "alice")
    scorer = ShadowScorer(shadows, slow_load, ServingMetrics(CollectorRegistry()), sync_s=1)
    await scorer.sync()
    result = score_points(prod, values)
    scorer.observe("s1", SimpleNamespace(version=2), values, result, 0.001)  # returns at once
    scorer.observe("s1", SimpleNamespace(version=3), values, result, 0.001)  # shadow == prod
    scorer.observe("other", SimpleNamespace(version=1), values, result, 0.001)  # no shadow
    assert scorer.pending == {} and len(scorer._tasks) == 1
    released.set()
    await asyncio.gather(*scorer._tasks)
    counts = scorer.pending[("s1", 3)]
    expected = int(np.sum(result.anomaly == score_points(cand, values).anomaly))
    assert (counts.points, counts.agreements, counts.requests) == (4, expected, 1)
    assert expected < 4  # the candidate disagrees on the spikes
