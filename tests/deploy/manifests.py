"""Rendering of the deployment: kustomize builds, the Secrets, the Dagster Helm values.

Everything is rendered offline with `kubectl kustomize` (kustomize v5); nothing touches a
cluster. The Secrets are built from the committed `*.env.example` files, copied next to a
copy of the secrets kustomization, as an operator would after filling them in.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("minikube", "production")
NAMESPACE = "anomaly-platform"
HELM = DEPLOY / "helm"


class BuildError(RuntimeError):
    """kustomize refused the kustomization."""


def kubectl() -> str:
    path = shutil.which("kubectl")
    if not path:
        raise RuntimeError(
            "kubectl (with kustomize v5) is needed to render deploy/; install the `kubectl` "
            "package of the Kubernetes apt repository or any kubectl >= 1.27"
        )
    return path


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize path` as a list of objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise BuildError(f"kustomize {path}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(DEPLOY / "overlays" / name))


def secrets_from_examples(secrets_dir: Path = DEPLOY / "secrets") -> list[dict[str, Any]]:
    """The Secrets kustomization built with each `X.env.example` standing in for `X.env`."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "secrets"
        shutil.copytree(secrets_dir, work, ignore=shutil.ignore_patterns("*.env"))
        for example in work.glob("*.env.example"):
            example.with_suffix("").write_text(example.read_text())
        return kustomize(work)


@functools.cache
def secrets() -> tuple[dict[str, Any], ...]:
    return tuple(secrets_from_examples())


def cluster(name: str) -> list[dict[str, Any]]:
    """What an operator applies for an overlay: its build plus the Secrets."""
    return [*overlay(name), *secrets()]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def merge(base: Any, override: Any) -> Any:
    """Helm's rule for values files: maps merge recursively, lists and scalars replace."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if key in out else value
    return out


def dagster_values(overlay_name: str) -> dict[str, Any]:
    """The project's values for the Dagster chart for an overlay (without chart defaults)."""
    values = load_yaml(HELM / "dagster-values.yaml")
    if overlay_name == "production":
        values = merge(values, load_yaml(HELM / "dagster-values-production.yaml"))
    return values


def by_kind(docs: list[dict[str, Any]] | tuple[dict[str, Any], ...], kind: str) -> list[dict]:
    return [doc for doc in docs if doc.get("kind") == kind]


def find(docs, kind: str, name: str) -> dict[str, Any]:
    for doc in by_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{kind}/{name} not in the build")
