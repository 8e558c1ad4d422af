"""MLflow for the pipeline: one run per trained model, the registry, aliases and retention.

Connection failures become `RegistryUnavailable`, the transient error the training retries.
MLflow's own HTTP retries are cut short so an unreachable server fails in seconds, not
minutes: the retry policy with backoff is ours.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from core.errors import RegistryUnavailable
from core.naming import EXPERIMENT_NAME, PRODUCTION_ALIAS, SHADOW_ALIAS, model_name

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

KEPT_ALIASES_NOTE = "aliased versions (production, shadow) are never deleted"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _unavailable(exc: Exception) -> bool:
    """True for errors that say MLflow could not be reached (worth a retry)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        return any(
            s in text
            for s in (
                "Max retries exceeded",
                "Connection refused",
                "API request to",
                "TEMPORARILY_UNAVAILABLE",
            )
        )
    return False


class Registry:
    def __init__(self, tracking_uri: str, retention: int,
                 new_version_alias: str = PRODUCTION_ALIAS) -> None:
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.retention = retention
        self.new_version_alias = new_version_alias
        self.client = MlflowClient(tracking_uri)
        self._experiment_id: str | None = None

    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if _unavailable(exc):
                raise RegistryUnavailable(f"MLflow unreachable during {what}: {exc}") from exc
            raise

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            import mlflow

            experiment = self._call("set_experiment", mlflow.set_experiment, EXPERIMENT_NAME)
            self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def production(self, series_id: str) -> RegisteredVersion | None:
        from mlflow.exceptions import MlflowException

        name = model_name(series_id)
        try:
            mv = self._call(
                "alias lookup", self.client.get_model_version_by_alias, name, PRODUCTION_ALIAS
            )
        except MlflowException as exc:
            # no such model, or a model without the alias (MLflow says "invalid parameter")
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return RegisteredVersion(name, int(mv.version), mv.run_id, dict(mv.tags))

    def log_and_register(
        self,
        series_id: str,
        result: Any,
        run_tags: dict[str, str],
        version_tags: dict[str, str],
        pip_requirements: list[str],
    ) -> RegisteredVersion:
        """Log params, metrics and the model in one MLflow run and register a version.

        Ordered for the fewest server round trips (the MLflow server's CPU bounds how many
        models a second the pipeline registers): metrics are logged after the model, so
        `log_model` has no metric history to copy onto it; the version is created with its
        tags in one call."""
        import time

        import mlflow
        import mlflow.sklearn
        from mlflow.entities import Metric, Param

        name = model_name(series_id)

        def log() -> RegisteredVersion:
            with mlflow.start_run(
                experiment_id=self.experiment_id(),
                tags=run_tags,
                run_name=f"{series_id}-{run_tags.get('job_id', 'rerun')[:8]}",
            ) as run:
                run_id = run.info.run_id
                info = mlflow.sklearn.log_model(
                    result.detector,
                    name="model",
                    params=result.params,
                    signature=result.signature,
                    input_example=result.input_example,
                    pip_requirements=pip_requirements,  # inferring them costs ~9 s a model
                    # 0.2 KB and 2 ms to load, against 3.7 KB and 80 ms with skops (the default)
                    serialization_format="cloudpickle",
                )
                now = int(time.time() * 1000)
                self.client.log_batch(
                    run_id,
                    metrics=[
                        Metric(k, float(v), now, 0, model_id=info.model_id)
                        for k, v in result.metrics.items()
                    ],
                    params=[Param(k, str(v)) for k, v in result.params.items()],
                )
            mv = self._create_version(name, info.model_id, run_id, version_tags)
            return RegisteredVersion(name, int(mv.version), run_id, version_tags)

        return self._call("logging the model", log)

    def _create_version(self, name: str, model_id: str, run_id: str, tags: dict[str, str]):
        from mlflow.exceptions import MlflowException

        def create():
            return self.client.create_model_version(
                name,
                f"models:/{model_id}",
                run_id,
                tags=tags,
                await_creation_for=0,
                model_id=model_id,
            )

        try:
            return create()
        except MlflowException as exc:  # first version of this series: no registered model yet
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:  # a concurrent first registration
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return create()

    def promote(self, series_id: str, version: int) -> None:
        self._call(
            "moving the alias",
            self.client.set_registered_model_alias,
            model_name(series_id),
            PRODUCTION_ALIAS,
            str(version),
        )

    def promote_new(self, series_id: str, version: int) -> int | None:
        """Give a new version its alias (NEW_VERSION_ALIAS); return the production version it
        shadows, or None when it went to production. A shadow needs a production version to
        be compared with, so a series' first version goes to production either way."""
        if self.new_version_alias == SHADOW_ALIAS:
            current = self.production(series_id)
            if current is not None:
                self._call("setting the shadow alias", self.client.set_registered_model_alias,
                           model_name(series_id), SHADOW_ALIAS, str(version))
                return current.version
        self.promote(series_id, version)
        return None

    def load_and_predict(self, version: RegisteredVersion, example: Any) -> Any:
        """Fetch the registered copy's MLmodel and pickle (what loading needs; not the
        environment files or examples) and predict with it through pyfunc."""
        import tempfile

        import mlflow.artifacts
        import mlflow.pyfunc

        def load() -> Any:
            uri = self.client.get_model_version_download_uri(version.name, str(version.version))
            with tempfile.TemporaryDirectory(prefix="adp-check-") as tmp:
                for artifact in ("MLmodel", "model.pkl"):
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{uri.rstrip('/')}/{artifact}",
                        dst_path=tmp,
                        tracking_uri=self.tracking_uri,
                    )
                return mlflow.pyfunc.load_model(tmp).predict(example)

        return self._call("loading the model back", load)

    def run_metric(self, run_id: str | None, key: str) -> float | None:
        if not run_id:
            return None
        run = self._call("reading the run", self.client.get_run, run_id)
        return run.data.metrics.get(key)

    def prune(self, series_id: str, newest: int | None = None) -> list[int]:
        """Keep the newest `retention` versions; KEPT_ALIASES_NOTE."""
        name = model_name(series_id)
        if newest is not None and newest <= self.retention:
            return []  # versions are numbered from 1: there cannot be more than `retention`
        model = self._call("reading the model", self.client.get_registered_model, name)
        aliased = {int(v) for v in (model.aliases or {}).values()}
        versions = sorted(
            (
                int(mv.version)
                for mv in self._call(
                    "listing versions", self.client.search_model_versions, f"name='{name}'"
                )
            ),
            reverse=True,
        )
        doomed = [v for v in versions[self.retention :] if v not in aliased]
        for version in doomed:
            self._call(
                "deleting an old version", self.client.delete_model_version, name, str(version)
            )
        if doomed:
            log.info("deleted %d old version(s) of %s", len(doomed), name)
        return doomed
