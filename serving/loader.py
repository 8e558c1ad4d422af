"""Models from the MLflow registry, with the last good copy of each kept on local disk.

`local_dir/{series_id}/{version}/` holds `model/` (as registered) and `meta.json`;
`{series_id}/production.json` names the version the alias last resolved to, so after a restart
the fallback serves what was in production, not the highest version. Versions are immutable:
a copy on disk is reused, not downloaded again. Per series the newest `keep_versions` copies and
the production one are kept; the number of series is not bounded here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.sklearn
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core.errors import InvalidVersion, ModelCheckFailed, ModelNotFound, RegistryUnavailable
from core.naming import MODEL_PREFIX, PRODUCTION_ALIAS, is_valid_series_id, require_series_id
from serving.scoring import ScoringModel, Source

log = logging.getLogger(__name__)

_POINTER = "production.json"
_STALE_TMP_S = 3600  # a temp download this old belongs to a process that died mid-download


@dataclass(frozen=True, eq=False)
class LoadedModel:
    series_id: str
    name: str
    version: int
    run_id: str | None
    source: Source
    model: ScoringModel
    size_bytes: int
    load_seconds: float
    tags: dict[str, str]


class ModelLoader:
    """Blocking calls: the app runs them in a thread, behind its circuit breaker."""

    def __init__(
        self, tracking_uri: str, local_dir: Path, timeout_s: float = 5.0, keep_versions: int = 2
    ) -> None:
        # MLflow reads these on every request, process-wide. Its defaults retry for minutes;
        # serving would rather fail at once and answer from the local copy.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri = tracking_uri
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.keep_versions = keep_versions
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def load(self, series_id: str, version: int | None = None) -> LoadedModel:
        """The production version (or `version`) from the registry, saved locally."""
        started = time.perf_counter()
        name = MODEL_PREFIX + require_series_id(series_id)
        mv = self._resolve(name, _checked(version))
        number, folder = int(mv.version), self.local_dir / series_id
        now = datetime.now(UTC).isoformat()
        meta = {"version": number, "run_id": mv.run_id, "tags": dict(mv.tags), "loaded_at": now}
        found = self._read(folder / str(number), name, "registry")
        model = found[0] if found else self._download(name, number, folder / str(number), meta)
        if found:
            _write_json(folder / str(number) / "meta.json", meta)  # tags may have changed
        if version is None:
            _write_json(folder / _POINTER, {"version": number, "at": now})
        self._prune(folder, number)
        return _loaded(series_id, model, meta, folder / str(number), started)

    def load_local(self, series_id: str, version: int | None = None) -> LoadedModel | None:
        """The local copy last in production (else the newest), or `version`; None if none."""
        started = time.perf_counter()
        name = MODEL_PREFIX + require_series_id(series_id)
        folder, wanted = self.local_dir / series_id, _checked(version)
        for number in [wanted] if wanted is not None else self._local_versions(folder):
            found = self._read(folder / str(number), name, "local")
            if found is not None:
                return _loaded(series_id, *found, folder / str(number), started)
        return None

    def production_version(self, series_id: str) -> int | None:
        """The version the `production` alias points at; None when there is none."""
        try:
            return int(self._resolve(MODEL_PREFIX + require_series_id(series_id), None).version)
        except ModelNotFound:
            return None

    def local_series(self, limit: int) -> list[str]:
        """Series with a local copy, most recently saved first (warm-up without the registry)."""
        found = [e for e in os.scandir(self.local_dir) if e.is_dir() and is_valid_series_id(e.name)]
        return [e.name for e in sorted(found, key=lambda e: -e.stat().st_mtime)[:limit]]

    def recent_series(self, limit: int) -> list[str]:
        """Series whose registered model changed most recently (warm-up from the registry)."""
        order = ["last_updated_timestamp DESC"]
        search, pattern = self.client.search_registered_models, f"name LIKE '{MODEL_PREFIX}%'"
        models = self._call("listing models", search, pattern, limit, order) or []
        names = (m.name.removeprefix(MODEL_PREFIX) for m in models)
        return [name for name in names if is_valid_series_id(name)]

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args); None when what it reads does not exist; RegistryUnavailable on failure."""
        try:
            return fn(*args)
        except (MlflowException, requests.RequestException, OSError) as exc:
            if _missing(exc):
                return None
            raise _unavailable(what, exc) from exc

    def _resolve(self, name: str, version: int | None) -> Any:
        what = f"resolving {name}"
        if version is None:
            mv = self._call(what, self.client.get_model_version_by_alias, name, PRODUCTION_ALIAS)
        else:
            mv = self._call(what, self.client.get_model_version, name, str(version))
        if mv is not None:
            return mv
        # Missing: say whether the model, its alias or only the asked version is.
        if self._call(f"reading {name}", self.client.get_registered_model, name) is None:
            raise ModelNotFound(
                f"there is no registered model {name}: train this series first",
                details=[{"model": name}],
            )
        if version is None:
            raise ModelNotFound(
                f"{name} has no version in production: promote one or train again",
                details=[{"model": name, "alias": PRODUCTION_ALIAS}],
            )
        raise InvalidVersion(
            f"{name} has no version {version}: ask for an existing one or omit the version",
            details=[{"model": name, "version": version}],
        )

    def _download(self, name: str, version: int, target: Path, meta: dict) -> ScoringModel:
        """Download into a temp folder beside the target, check it loads, then rename."""
        tmp = target.parent / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            try:
                uri = self.client.get_model_version_download_uri(name, str(version))
                fetched = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(tmp), tracking_uri=self.tracking_uri
                )
            except Exception as exc:  # artifact stores raise their own types (botocore, ...)
                raise _unavailable(f"downloading {name} v{version}", exc) from exc
            Path(fetched).rename(tmp / "model")  # named after the artifact folder otherwise
            try:
                model = _scoring(tmp / "model", name, version, "registry")
            except Exception as exc:  # whatever the unpickler raised, this version cannot serve
                raise ModelCheckFailed(f"{name} v{version} does not load: {exc!r}") from exc
            _write_json(tmp / "meta.json", meta)
            shutil.rmtree(target, ignore_errors=True)  # a copy that did not load, if any
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / "meta.json").exists():
                    raise
                log.info("%s v%d was saved by a concurrent load", name, version)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return model

    def _read(self, path: Path, name: str, source: Source) -> tuple[ScoringModel, dict] | None:
        if not (path / "meta.json").exists():
            return None
        try:
            meta = json.loads((path / "meta.json").read_text())
            return _scoring(path / "model", name, int(path.name), source), meta
        except Exception:  # a damaged copy is skipped, whatever the unpickler raised
            log.warning("local copy %s does not load; skipping it", path, exc_info=True)
            return None

    def _local_versions(self, folder: Path) -> list[int]:
        """Local versions, the one last in production first, then newest first."""
        if not folder.is_dir():
            return []
        versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        try:
            current = int(json.loads((folder / _POINTER).read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            current = None
        return sorted(versions, key=lambda v: (v != current, -v))

    def _prune(self, folder: Path, loaded: int) -> None:
        versions = self._local_versions(folder)
        newest = sorted(versions, reverse=True)[: self.keep_versions]
        keep = {loaded, *versions[:1], *newest}  # versions[0]: the one last in production
        for version in set(versions) - keep:
            shutil.rmtree(folder / str(version), ignore_errors=True)
        for tmp in folder.glob(".tmp-*"):
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)


def _loaded(series_id: str, model: ScoringModel, meta: dict, path: Path, t0: float) -> LoadedModel:
    seconds, size = time.perf_counter() - t0, _size(path / "model")
    version, run_id, tags = int(meta["version"]), meta.get("run_id"), meta.get("tags", {})
    return LoadedModel(
        series_id, model.name, version, run_id, model.source, model, size, seconds, tags
    )


def _checked(version: int | None) -> int | None:
    if version is not None and (type(version) is not int or version < 1):
        raise InvalidVersion(f"version must be a positive integer, got {version!r}")
    return version


def _missing(exc: Exception) -> bool:
    code, text = getattr(exc, "error_code", ""), str(exc)
    # An alias that does not exist is reported as a bad parameter, not a missing resource.
    alias = code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
    return code == "RESOURCE_DOES_NOT_EXIST" or alias


def _unavailable(what: str, exc: Exception) -> RegistryUnavailable:
    log.warning("model registry failed while %s: %s", what, exc)
    return RegistryUnavailable(f"the model registry did not answer while {what}; retry later")


def _scoring(path: Path, name: str, version: int, source: Source) -> ScoringModel:
    return ScoringModel.from_detector(mlflow.sklearn.load_model(str(path)), name, version, source)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
