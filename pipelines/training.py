"""Training one series: the procedure shared by the sensor's batch runs and the asset.

window → re-check the rules → skip if production already holds this data and config →
train → one MLflow run + a registered version → check it loads back and predicts → move
the `production` alias → prune old versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata

import numpy as np
import pandas as pd

from core.contracts import TrainingConfig
from core.detectors import plausible_anomaly_rate
from core.errors import ModelCheckFailed
from core.hashing import data_sha256
from core.storage import TrainingDataStore
from core.training import train
from core.validation import validate_training_data
from pipelines.registry import RegisteredVersion, Registry
from pipelines.window import training_window

log = logging.getLogger(__name__)

# What serving needs to load a model; given explicitly, MLflow does not infer them (slow).
_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    description: str
    severity: str = "ERROR"
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Trained:
    series_id: str
    version: int
    run_id: str | None
    model_uri: str
    new_version: bool
    metrics: dict[str, float]
    data: dict
    checks: list[Check]
    shadow_of: int | None = None  # the production version a new shadow version is compared with


@cache  # installed versions do not change within a process; read them once, not per model
def _pinned() -> tuple[str, ...]:
    return tuple(f"{name}=={metadata.version(name)}" for name in _REQUIREMENTS)


def pip_requirements() -> list[str]:
    return list(_pinned())


def config_sha256(config: TrainingConfig) -> str:
    return hashlib.sha256(
        json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


def train_series(
    series_id: str,
    config: TrainingConfig,
    store: TrainingDataStore,
    registry: Registry,
    job_id: str | None,
    dagster_run_id: str,
) -> Trained:
    frame = training_window(store, series_id, config.window_hours)
    timestamps, values = frame["timestamp"].to_numpy(), frame["value"].to_numpy()
    validate_training_data(timestamps, values)  # the API checked each file, not their union
    data = {
        "rows": len(frame),
        "first_timestamp": int(timestamps[0]),
        "last_timestamp": int(timestamps[-1]),
        "data_sha256": data_sha256(timestamps, values),
    }
    rules = Check(
        "training_data_valid",
        True,
        "the training set passes the shared rules",
        metadata={"rows": data["rows"]},
    )
    identity = {"data_sha256": data["data_sha256"], "config_sha256": config_sha256(config)}

    current = registry.production(series_id)
    if current is not None and all(current.tags.get(k) == v for k, v in identity.items()):
        log.info(
            "%s: production v%d already holds this data and config", series_id, current.version
        )
        example = frame.head(5).to_pandas()
        checks = _model_checks(
            registry,
            current,
            example,
            None,
            registry.run_metric(current.run_id, "anomaly_rate"),
            config,
        )
        return Trained(
            series_id,
            current.version,
            current.run_id,
            current.uri,
            False,
            {},
            data,
            [rules, *checks],
        )

    result = train(frame, config)
    tags = {"series_id": series_id, "job_id": job_id or "", "dagster_run_id": dagster_run_id}
    version = registry.log_and_register(
        series_id,
        result,
        run_tags=tags,
        version_tags={**identity, "job_id": job_id or "", "algorithm": config.algorithm.value},
        pip_requirements=pip_requirements(),
    )
    expected = result.detector.predict(result.input_example)
    checks = _model_checks(
        registry, version, result.input_example, expected, result.metrics["anomaly_rate"], config
    )
    shadow_of = registry.promote_new(series_id, version.version)
    registry.prune(series_id, newest=version.version)
    return Trained(
        series_id,
        version.version,
        version.run_id,
        version.uri,
        True,
        result.metrics,
        data,
        [rules, *checks],
        shadow_of,
    )


def _model_checks(
    registry: Registry,
    version: RegisteredVersion,
    example: pd.DataFrame,
    expected: np.ndarray | None,
    rate: float | None,
    config: TrainingConfig,
) -> list[Check]:
    """The registered model loads back and predicts (raises if not: it must not serve);
    its anomaly rate on the training data is plausible (a warning if not)."""
    loaded = np.asarray(registry.load_and_predict(version, example)).ravel()
    ok = loaded.shape == (len(example),) and set(np.unique(loaded)) <= {0, 1}
    if expected is not None:
        ok = ok and bool(np.array_equal(loaded, np.asarray(expected).ravel()))
    if not ok:
        raise ModelCheckFailed(
            f"{version.uri} predicts {loaded.tolist()} for its input example"
            f" (expected {expected}); not promoted"
        )
    low, high = plausible_anomaly_rate(config.algorithm, config.hyperparameters)
    return [
        Check(
            "model_loads_and_predicts",
            True,
            "the registered model loads and predicts its input example",
            metadata={"model_uri": version.uri},
        ),
        Check(
            "anomaly_rate_plausible",
            rate is not None and low <= rate <= high,
            f"anomaly rate on the training data within [{low}, {high}]",
            severity="WARN",
            metadata={"anomaly_rate": rate if rate is not None else -1.0},
        ),
    ]
