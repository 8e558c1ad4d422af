"""ModelLoader against a real MLflow server, with models registered the way the pipeline does."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import polars as pl
import pytest

from core.contracts import TrainingConfig
from core.errors import InvalidVersion, ModelNotFound, RegistryUnavailable
from core.training import train
from pipelines.registry import Registry
from pipelines.training import pip_requirements
from serving.loader import ModelLoader

pytestmark = pytest.mark.integration


def register(registry: Registry, series_id: str, algorithm: str, seed: int):
    """Train, log, register and tag one version like pipelines.training does; not promoted."""
    values = np.random.default_rng(seed).normal(5.0, 0.5, 10_000)
    frame = pl.DataFrame(
        {"timestamp": 1_733_000_000 + 300 * np.arange(values.size), "value": values}
    )
    result = train(frame, TrainingConfig(algorithm=algorithm))
    job_id = str(uuid.uuid4())
    version = registry.log_and_register(
        series_id,
        result,
        run_tags={"series_id": series_id, "job_id": job_id},
        version_tags={"job_id": job_id, "data_sha256": f"sha-{seed}", "algorithm": algorithm},
        pip_requirements=pip_requirements(),
    )
    return version, result.detector


@pytest.fixture(scope="module")
def registry(mlflow_server) -> Registry:
    return Registry(mlflow_server.url, retention=10)


@pytest.fixture(scope="module")
def series(registry) -> dict:
    """v1 statistical, v2 isolation forest in production; and a series never promoted."""
    sid = f"loader_{uuid.uuid4().hex[:10]}"
    v1, statistical = register(registry, sid, "statistical", 1)
    v2, forest = register(registry, sid, "isolation_forest", 2)
    registry.promote(sid, v2.version)
    unpromoted = f"loader_{uuid.uuid4().hex[:10]}"
    register(registry, unpromoted, "robust", 3)
    return {
        "id": sid,
        "v1": v1,
        "v2": v2,
        "detectors": {1: statistical, 2: forest},
        "unpromoted": unpromoted,
    }


@pytest.fixture
def loader(mlflow_server, tmp_path) -> ModelLoader:
    return ModelLoader(mlflow_server.url, tmp_path / "models", timeout_s=5.0)


def scores_agree(loaded, detector) -> bool:
    values = np.random.default_rng(9).normal(5.0, 1.5, 5_000)
    return bool(np.array_equal(loaded.model.score(values), detector.score_samples(values)))


def test_load_by_alias_saves_a_local_copy(loader, series):
    loaded = loader.load(series["id"])
    assert (loaded.version, loaded.source, loaded.model.algorithm) == (
        2,
        "registry",
        "isolation_forest",
    )
    assert loaded.name == f"model_od_{series['id']}" and loaded.run_id == series["v2"].run_id
    assert loaded.tags["algorithm"] == "isolation_forest" and loaded.tags["job_id"]
    assert loaded.size_bytes > 0 and 0 < loaded.load_seconds < 5
    assert scores_agree(loaded, series["detectors"][2])
    folder = loader.local_dir / series["id"] / "2"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["version"] == 2 and meta["run_id"] == loaded.run_id and meta["loaded_at"]
    assert (folder / "model" / "MLmodel").exists()
    assert not list((loader.local_dir / series["id"]).glob(".tmp-*"))  # renamed into place
    assert loader.production_version(series["id"]) == 2


def test_load_an_exact_version(loader, series):
    loaded = loader.load(series["id"], version=1)
    assert (loaded.version, loaded.model.algorithm) == (1, "statistical")
    assert scores_agree(loaded, series["detectors"][1])


def test_missing_models_and_versions(loader, series):
    with pytest.raises(ModelNotFound, match="no registered model"):
        loader.load(f"absent_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ModelNotFound, match="no version in production"):
        loader.load(series["unpromoted"])
    with pytest.raises(InvalidVersion, match="has no version 99"):
        loader.load(series["id"], version=99)
    with pytest.raises(ModelNotFound):
        loader.load(f"absent_{uuid.uuid4().hex[:8]}", version=1)
    assert loader.production_version(series["unpromoted"]) is None
    assert loader.load_local(series["id"]) is None  # nothing saved by failures


def test_local_copy_serves_after_a_restart(mlflow_server, loader, series):
    loader.load(series["id"], version=1)
    loader.load(series["id"])
    restarted = ModelLoader(mlflow_server.url, loader.local_dir)
    local = restarted.load_local(series["id"])
    assert (local.version, local.source, local.model.source) == (2, "local", "local")
    assert local.run_id == series["v2"].run_id and local.tags["algorithm"] == "isolation_forest"
    assert scores_agree(local, series["detectors"][2])
    assert restarted.load_local(series["id"], version=1).model.algorithm == "statistical"
    assert restarted.load_local(series["id"], version=7) is None
    assert restarted.local_series(10) == [series["id"]]
    assert series["id"] in restarted.recent_series(100)


def test_local_series_lists_the_most_recently_saved_first(loader, series, registry):
    other = f"loader_{uuid.uuid4().hex[:10]}"
    registry.promote(other, register(registry, other, "robust", 6)[0].version)
    loader.load(series["id"])
    loader.load(other)
    assert loader.local_series(10) == [other, series["id"]]
    assert loader.local_series(1) == [other]
    assert loader.recent_series(1) == [other]


def test_local_fallback_follows_the_alias_not_the_highest_version(
    mlflow_server, tmp_path, registry
):
    sid = f"rollback_{uuid.uuid4().hex[:8]}"
    register(registry, sid, "statistical", 4)
    register(registry, sid, "robust", 5)
    loader = ModelLoader(mlflow_server.url, tmp_path / "models", keep_versions=1)
    registry.promote(sid, 2)
    loader.load(sid)
    registry.promote(sid, 1)  # rolled back
    assert loader.load(sid).version == 1
    assert loader.load_local(sid).version == 1
    assert sorted(p.name for p in (tmp_path / "models" / sid).iterdir()) == [
        "1",
        "2",
        "production.json",
    ]  # keep_versions=1 keeps the newest and the production one


def test_registry_down_fails_fast_and_the_local_copy_still_serves(mlflow_server, loader, series):
    loader.load(series["id"])
    mlflow_server.stop()
    try:
        started = time.perf_counter()
        with pytest.raises(RegistryUnavailable, match="did not answer"):
            loader.load(series["id"])
        assert time.perf_counter() - started < 1.0
        with pytest.raises(RegistryUnavailable):
            loader.production_version(series["id"])
        local = loader.load_local(series["id"])
        assert (local.version, local.source) == (2, "local")
        assert scores_agree(local, series["detectors"][2])
    finally:
        mlflow_server.start()
    assert loader.load(series["id"]).source == "registry"
