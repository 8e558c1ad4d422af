"""Offline schema validation: core kinds against Kubernetes' OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors), custom resources against their CRD
schemas (deploy/schemas, kubeconform's file names) made strict the same way, and the
Dagster chart's values against the chart's values.schema.json.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import referencing.exceptions
import yaml

from tests.deploy.manifests import DEPLOY, merge

SCHEMAS = DEPLOY / "schemas"
SHARED_SCHEMAS = DEPLOY.parents[1] / "shared" / "k8s-schemas"
K8S_VERSION = "1.32"


def _strict(schema: Any) -> Any:
    """Unknown fields become errors, as the API server prunes or rejects them, except where
    the CRD keeps unknown fields on purpose."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def crd_schema_file(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / "crds" / group / f"{kind.lower()}_{version}.json"


@functools.cache
def _crd_validator(path: Path) -> jsonschema.protocols.Validator:
    schema = _strict(json.loads(path.read_text()))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _without_nulls(value: Any) -> Any:
    # The API server drops null values of custom resources before it validates them.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def is_custom(doc: dict[str, Any]) -> bool:
    return "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].startswith(
        tuple(f"{g}/" for g in _CORE_GROUPS)
    )


_CORE_GROUPS = (
    "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
)


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema error of one object, as `Kind/name: path: message`."""
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    schema_file = crd_schema_file(doc.get("apiVersion", ""), doc.get("kind", ""))
    if schema_file.exists():
        validator = _crd_validator(schema_file)
        return [
            f"{where}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(_without_nulls(doc))
        ]
    if is_custom(doc):
        return [f"{where}: no CRD schema for {doc['apiVersion']} {doc['kind']}"]
    try:
        kubernetes_validate.validate(copy.deepcopy(doc), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'/'.join(map(str, exc.absolute_path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc}"]
    return []


def all_validation_errors(docs) -> list[str]:
    return [error for doc in docs for error in validation_errors(doc)]


# --- Dagster chart values -----------------------------------------------------------------

_K8S_DEFINITIONS = (
    importlib.resources.files("kubernetes_validate")
    / "kubernetes-json-schema"
    / f"v{K8S_VERSION}.0-local"
    / "_definitions.json"
)


@functools.cache
def _k8s_definitions() -> dict[str, Any]:
    return json.loads(_K8S_DEFINITIONS.read_text())


def _retrieve(uri: str) -> referencing.Resource:
    """Serves the chart schema's external `.../_definitions.json` references offline."""
    if not uri.endswith("/_definitions.json"):
        raise referencing.exceptions.NoSuchResource(ref=uri)
    definitions = _k8s_definitions()
    defs = definitions.get("$defs") or definitions.get("definitions")
    return referencing.Resource.from_contents(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs,
         "definitions": defs}
    )


@functools.cache
def _dagster_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "helm" / "dagster-values.schema.json").read_text())
    registry = referencing.Registry(retrieve=_retrieve)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((SCHEMAS / "helm" / "dagster-values.default.yaml").read_text())


def dagster_values_errors(values: dict[str, Any]) -> list[str]:
    """Errors of the chart's schema on the defaults merged with `values`, as Helm does."""
    merged = merge(chart_defaults(), values)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _dagster_validator().iter_errors(merged)
    ]
