"""The MLflow registry as the training API sees it: versions, aliases, tags, runs, models.

Blocking calls (MlflowClient): routes run them in a worker thread. An unreachable server is
`RegistryUnavailable` (503) within about REGISTRY_TIMEOUT_S, a missing model
`ModelNotFound`, a missing version `InvalidVersion`. mlflow is imported on first use.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidVersion, ModelNotFound, RegistryUnavailable
from core.naming import model_name

log = logging.getLogger(__name__)

_DETECTORS_KEPT = 16  # loaded detectors for plots; versions are immutable, so never stale


@dataclass(frozen=True)
class Version:
    version: int
    created_ms: int
    aliases: list[str]
    run_id: str | None
    tags: dict[str, str]


@dataclass(frozen=True)
class Run:
    experiment_id: str | None
    metrics: dict[str, float]
    params: dict[str, str]


class ModelRegistry:
    def __init__(self, tracking_uri: str, timeout_s: float) -> None:
        # Read by MLflow on every request, process-wide: fail fast rather than retry.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.tracking_uri = tracking_uri
        self._client: Any = None
        self._detectors: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            # models:/ URIs (the plot's model loads) resolve against the global registry URI
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri,
                                        registry_uri=self.tracking_uri)
        return self._client

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args); None when what it reads does not exist."""
        import requests
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args)
        except (MlflowException, requests.RequestException, OSError) as exc:
            code, text = getattr(exc, "error_code", ""), str(exc)
            if code == "RESOURCE_DOES_NOT_EXIST" or (
                code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
            ):
                return None
            log.warning("model registry failed while %s: %s", what, exc)
            raise RegistryUnavailable(
                f"the model registry did not answer while {what}; retry later"
            ) from exc

    # -- reading --------------------------------------------------------------------------

    def aliases(self, series_id: str) -> dict[str, int]:
        """{alias: version} of the series' model; ModelNotFound when it has none."""
        name = model_name(series_id)
        model = self._call(f"reading {name}", self.client.get_registered_model, name)
        if model is None:
            raise ModelNotFound(
                f"there is no registered model {name}: train this series first",
                details=[{"model": name}],
            )
        return {alias: int(v) for alias, v in (model.aliases or {}).items()}

    def versions(self, series_ids: Sequence[str]) -> dict[str, list[Version]]:
        """Every kept version of each series' model, newest first (one search)."""
        if not series_ids:
            return {}
        names = ", ".join(f"'{model_name(s)}'" for s in series_ids)  # ids are [A-Za-z0-9_]
        found = self._call("listing versions", self._search, f"name IN ({names})") or []
        # A version found by search carries no aliases; its registered model does.
        models = self._call("listing models", self.client.search_registered_models,
                            f"name IN ({names})", len(series_ids)) or []
        aliases = {m.name: m.aliases or {} for m in models}
        out: dict[str, list[Version]] = {s: [] for s in series_ids}
        for mv in found:
            held = [a for a, v in aliases.get(mv.name, {}).items() if int(v) == int(mv.version)]
            out[mv.name.removeprefix("model_od_")].append(_version(mv, held))
        for versions in out.values():
            versions.sort(key=lambda v: -v.version)
        return out

    def _search(self, filter_string: str) -> list[Any]:
        results, token = [], None
        while True:
            page = self.client.search_model_versions(filter_string, max_results=1000,
                                                     page_token=token)
            results.extend(page)
            token = page.token
            if not token:
                return results

    def version(self, series_id: str, version: int) -> Version:
        name = model_name(series_id)
        mv = self._call(f"reading {name} v{version}", self.client.get_model_version, name,
                        str(version))
        if mv is None:
            self.aliases(series_id)  # ModelNotFound when the model itself is missing
            raise InvalidVersion(
                f"{name} has no version {version}; GET /models/{series_id}/versions lists them",
                details=[{"model": name, "version": version}],
            )
        return _version(mv)

    def run(self, run_id: str | None) -> Run:
        """A version's run; empty when the run is gone."""
        run = self._call("reading a run", self.client.get_run, run_id) if run_id else None
        if run is None:
            return Run(None, {}, {})
        return Run(run.info.experiment_id, dict(run.data.metrics), dict(run.data.params))

    def detector(self, series_id: str, version: int) -> Any:
        """The fitted detector of a version (downloaded once, then kept)."""
        key = (series_id, version)
        with self._lock:
            if key in self._detectors:
                self._detectors.move_to_end(key)
                return self._detectors[key]
        import mlflow.sklearn

        self.client  # noqa: B018 (sets the registry URI the models:/ URI is resolved against)
        uri = f"models:/{model_name(series_id)}/{version}"
        detector = self._call(f"loading {uri}", mlflow.sklearn.load_model, uri)
        with self._lock:
            self._detectors[key] = detector
            while len(self._detectors) > _DETECTORS_KEPT:
                self._detectors.popitem(last=False)
        return detector

    # -- writing --------------------------------------------------------------------------

    def set_alias(self, series_id: str, alias: str, version: int) -> None:
        name = model_name(series_id)
        self._call(f"moving {alias} of {name}", self.client.set_registered_model_alias, name,
                   alias, str(version))

    def delete_alias(self, series_id: str, alias: str) -> None:
        name = model_name(series_id)
        self._call(f"removing {alias} of {name}", self.client.delete_registered_model_alias,
                   name, alias)

    def set_tags(self, series_id: str, version: int, tags: dict[str, str]) -> None:
        name = model_name(series_id)
        for key, value in tags.items():
            self._call(f"tagging {name} v{version}", self.client.set_model_version_tag, name,
                       str(version), key, value)


def _version(mv: Any, aliases: list[str] | None = None) -> Version:
    held = sorted(aliases if aliases is not None else mv.aliases or [])
    return Version(int(mv.version), int(mv.creation_timestamp or 0), held, mv.run_id,
                   dict(mv.tags or {}))
