"""The deployment agrees with the code: Serve applications, RabbitMQ topology, setting
names, the executor's configuration, the Dagster chart values and the alerts' metrics."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry

from core.settings import Settings
from pipelines.executors import ExecutorSettings
from tests.deploy import checks
from tests.deploy.manifests import (
    DEPLOY,
    OVERLAYS,
    REPO,
    by_kind,
    cluster,
    dagster_values,
    find,
    overlay,
)
from tests.deploy.schemas import dagster_values_errors
from tests.deploy.topology import declared_topology, normalized

per_overlay = pytest.mark.parametrize("name", OVERLAYS)
# Serve options the production overlay may change: how many Predictor replicas, and the CPU
# each asks for (so that Ray's autoscaler adds pods). Everything else must be identical.
SCALING_KEYS = {"num_replicas", "autoscaling_config"}


def serve_config() -> dict:
    return yaml.safe_load((REPO / "serving" / "serve_config.yaml").read_text())


def ray_serve_config(name: str) -> dict:
    return yaml.safe_load(find(overlay(name), "RayService", "serving")["spec"]["serveConfigV2"])


def without_scaling(apps: list[dict]) -> list[dict]:
    apps = copy.deepcopy(apps)
    for app in apps:
        for deployment in app.get("deployments", []):
            for key in SCALING_KEYS:
                deployment.pop(key, None)
            deployment.get("ray_actor_options", {}).pop("num_cpus", None)
    return apps


def test_rayservice_applications_are_serve_configs() -> None:
    assert ray_serve_config("minikube")["applications"] == serve_config()["applications"]


def test_production_changes_only_scaling_of_the_applications() -> None:
    production = ray_serve_config("production")["applications"]
    assert without_scaling(production) == without_scaling(serve_config()["applications"])
    predictor = production[0]["deployments"][0]
    assert predictor["autoscaling_config"]["min_replicas"] >= 2
    assert predictor["ray_actor_options"]["num_cpus"] >= 1


@per_overlay
def test_serve_listens_where_the_services_point(name: str) -> None:
    config = ray_serve_config(name)
    assert config["http_options"] == {**serve_config()["http_options"], "host": "0.0.0.0"}
    assert config["proxy_location"] == "EveryNode"
    assert checks.services(overlay(name))["serving-serve-svc"][0]["port"] == (
        config["http_options"]["port"])


def test_rabbitmq_definitions_are_the_declared_topology() -> None:
    committed = json.loads((DEPLOY / "base" / "rabbitmq" / "definitions.json").read_text())
    assert normalized(committed) == normalized(declared_topology())
    assert {v["name"] for v in committed["vhosts"]} == {"/"}
    assert not committed.get("users") and not committed.get("permissions"), "no credentials"


@per_overlay
def test_rabbitmq_loads_the_definitions_and_plugins(name: str) -> None:
    config = next(d for d in by_kind(overlay(name), "ConfigMap")
                  if d["metadata"]["name"].startswith("rabbitmq-config"))
    definitions = json.loads(config["data"]["definitions.json"])
    assert normalized(definitions) == normalized(declared_topology())
    conf = dict(line.split(" = ", 1) for line in config["data"]["rabbitmq.conf"].splitlines()
                if " = " in line and not line.startswith("#"))
    mounts = find(overlay(name), "StatefulSet", "rabbitmq")["spec"]["template"]["spec"][
        "containers"][0]["volumeMounts"]
    assert conf["definitions.local.path"] in {m["mountPath"] for m in mounts}
    plugins = config["data"]["enabled_plugins"]
    assert "rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins


# The application-level JWT settings the production overlay must set (core/settings.py).
AUTH_SETTINGS = {"AUTH_ENABLED", "AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE",
                 "AUTH_ROLES_CLAIM"}
# Read by libraries, not by core/settings.py.
LIBRARY_PREFIXES = ("AWS_", "MLFLOW_", "RAY_")


def setting_names() -> set[str]:
    names = {field.upper() for field in Settings.model_fields}
    for field, info in ExecutorSettings.model_fields.items():
        alias = info.validation_alias
        names.add(alias if isinstance(alias, str) else f"DAGSTER_K8S_{field.upper()}")
    return names


@per_overlay
def test_environment_uses_real_setting_names(name: str) -> None:
    docs = cluster(name)
    known = setting_names()
    assert known >= AUTH_SETTINGS
    for prefix in ("training-api-env", "serving-env", "pipelines-env"):
        config = next(d for d in by_kind(docs, "ConfigMap")
                      if d["metadata"]["name"].startswith(prefix))
        unknown = {k for k in config["data"] if k not in known
                   and not k.startswith(LIBRARY_PREFIXES)}
        assert not unknown, f"{prefix}: {unknown}"
    for secret in ("training-api", "serving", "pipelines"):
        keys = set(find(docs, "Secret", secret).get("data", {}))
        assert keys <= known | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, secret


def test_production_turns_application_jwt_on() -> None:
    for prefix in ("training-api-env", "serving-env"):
        config = next(d for d in by_kind(overlay("production"), "ConfigMap")
                      if d["metadata"]["name"].startswith(prefix))
        assert config["data"]["AUTH_ENABLED"] == "true"
        assert config["data"]["AUTH_ROLES_CLAIM"] == "roles"
        assert set(config["data"]) >= AUTH_SETTINGS
    minikube = next(d for d in by_kind(overlay("minikube"), "ConfigMap")
                    if d["metadata"]["name"].startswith("training-api-env"))
    assert "AUTH_ENABLED" not in minikube["data"], "off by default"


@per_overlay
def test_pipelines_env_configures_the_k8s_executor(name: str) -> None:
    docs = cluster(name)
    env = find(docs, "ConfigMap", "pipelines-env")["data"]
    settings = ExecutorSettings(_env_file=None, **{  # the real validation of the executor
        key.removeprefix("DAGSTER_K8S_").lower() if key.startswith("DAGSTER_K8S_") else key:
        json.loads(value) if value.startswith(("[", "{")) else value
        for key, value in env.items() if key.startswith("DAGSTER_")
    })
    assert settings.deployment == "k8s"
    for config_map in settings.env_config_maps:
        find(docs, "ConfigMap", config_map)
    for secret in settings.env_secrets:
        find(docs, "Secret", secret)
    user_code = dagster_values(name)["dagster-user-deployments"]["deployments"][0]
    image = f"{user_code['image']['repository']}:{user_code['image']['tag']}"
    assert settings.image == image, "steps must run the code location's image"


@per_overlay
def test_dagster_values_validate_against_the_chart_schema(name: str) -> None:
    assert dagster_values_errors(dagster_values(name)) == []


@per_overlay
def test_dagster_values_reference_what_exists(name: str) -> None:
    docs = cluster(name)
    values = dagster_values(name)
    secret = find(docs, "Secret", values["global"]["postgresqlSecretName"])
    assert "postgresql-password" in secret["data"]
    assert values["postgresql"]["postgresqlHost"] in checks.services(docs)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    for holder in [launcher, *values["dagster-user-deployments"]["deployments"]]:
        for ref in holder.get("envConfigMaps", []):
            find(docs, "ConfigMap", ref["name"])
        for ref in holder.get("envSecrets", []):
            find(docs, "Secret", ref["name"])


@per_overlay
def test_dagster_pods_are_hardened(name: str) -> None:
    values = dagster_values(name)
    parts = {"webserver": values["dagsterWebserver"], "daemon": values["dagsterDaemon"],
             **{d["name"]: d for d in values["dagster-user-deployments"]["deployments"]}}
    for part, v in parts.items():
        assert v["podSecurityContext"]["runAsNonRoot"] is True, part
        assert v["securityContext"]["allowPrivilegeEscalation"] is False, part
        assert v["securityContext"]["capabilities"]["drop"] == ["ALL"], part
        assert {"requests", "limits"} <= set(v["resources"]), part
        assert v.get("livenessProbe") and v.get("readinessProbe"), part
        tag = str(v["image"].get("tag") or "")
        assert tag and tag != "latest", part
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"][
        "maxConcurrentRuns"] >= 1


def exported_metrics() -> set[str]:
    """Sample names the applications export: their own metrics and the instrumentator's."""
    from fastapi.testclient import TestClient

    from serving.api import create_app
    from serving.metrics import ServingMetrics
    from training_api.metrics import ApiMetrics

    registry = CollectorRegistry()
    ApiMetrics(registry)
    ServingMetrics(registry)
    http = CollectorRegistry()
    # Both apps instrument FastAPI the same way; the metrics appear with the first request.
    TestClient(create_app(http)).get("/liveness")
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "gauge": [""], "summary": ["_sum", "_count"]}
    return {m.name + s for r in (registry, http) for m in r.collect() for s in suffixes[m.type]}


# Metrics of other exporters the alerts use: Ray Serve's proxies and RabbitMQ's plugin.
EXTERNAL_METRICS = {
    "ray_serve_num_http_requests_total", "ray_serve_num_http_error_requests_total",
    "ray_serve_http_request_latency_ms_bucket", "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages",
}
PROMQL_FUNCTIONS = {"sum", "rate", "clamp_min", "histogram_quantile", "max", "by", "and"}


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_alerts_use_exported_metric_names() -> None:
    rule = by_kind(overlay("production"), "PrometheusRule")[0]
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    for needed in ("TrainingApiHighErrorRate", "TrainingApiHighLatencyP99",
                   "ServingHighErrorRate", "ServingHighLatencyP99", "ServingLowCacheHitRate",
                   "TrainingQueueDepthHigh", "TrainingDeadLettersPresent"):
        assert needed in alerts
    known = exported_metrics() | EXTERNAL_METRICS
    dashboard = json.loads((DEPLOY / "base" / "monitoring" / "grafana-dashboard.json")
                           .read_text())
    exprs = [*alerts.values(),
             *(t["expr"] for p in dashboard["panels"] for t in p["targets"])]
    for expr in exprs:
        names = set(re.findall(r"([a-z_][a-z0-9_]*)\s*[{\[]", expr)) - PROMQL_FUNCTIONS
        assert names <= known, f"{names - known} in {expr}"
