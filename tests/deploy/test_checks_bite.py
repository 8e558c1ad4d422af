"""The checks are known to bite: each test breaks a copy of a manifest (or of the deploy
folder) the way a careless edit would, and sees the matching check fail."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from tests.deploy import checks
from tests.deploy.manifests import (
    DEPLOY,
    NAMESPACE,
    BuildError,
    cluster,
    dagster_values,
    find,
    kustomize,
)
from tests.deploy.schemas import dagster_values_errors, validation_errors
from tests.deploy.topology import declared_topology, normalized


@pytest.fixture
def docs() -> list[dict]:
    return copy.deepcopy(cluster("minikube"))


def api_container(docs: list[dict]) -> dict:
    return find(docs, "Deployment", "training-api")["spec"]["template"]["spec"]["containers"][0]


def worker_container(docs: list[dict]) -> dict:
    ray = find(docs, "RayService", "serving")
    return ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"][0]


def test_misspelt_field_of_a_core_kind(docs: list[dict]) -> None:
    api_container(docs)["readinesProbe"] = api_container(docs).pop("readinessProbe")
    errors = validation_errors(find(docs, "Deployment", "training-api"))
    assert any("readinesProbe" in e for e in errors)


def test_wrong_type_in_a_core_kind(docs: list[dict]) -> None:
    find(docs, "Service", "training-api")["spec"]["ports"][0]["port"] = "eighty"
    assert validation_errors(find(docs, "Service", "training-api"))


def test_misspelt_field_inside_the_rayservice_pod_template(docs: list[dict]) -> None:
    worker_container(docs)["imagePulPolicy"] = "IfNotPresent"
    errors = validation_errors(find(docs, "RayService", "serving"))
    assert any("imagePulPolicy" in e for e in errors)


def test_unknown_istio_field_and_bad_enum(docs: list[dict]) -> None:
    vs = find(docs, "VirtualService", "anomaly-platform")
    vs["spec"]["http"][0]["timeOut"] = "30s"
    assert any("timeOut" in e for e in validation_errors(vs))
    policy = find(docs, "AuthorizationPolicy", "serving")
    policy["spec"]["action"] = "PERMIT"
    assert validation_errors(policy)


def test_custom_resource_without_schema(docs: list[dict]) -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validation_errors(doc) == ["Widget/w: no CRD schema for example.com/v1 Widget"]


def test_dangling_config_map_and_secret_key(docs: list[dict]) -> None:
    api_container(docs)["envFrom"][0]["configMapRef"]["name"] = "training-api-envv"
    rabbit = find(docs, "StatefulSet", "rabbitmq")["spec"]["template"]["spec"]["containers"][0]
    rabbit["env"][-1]["valueFrom"]["secretKeyRef"]["key"] = "PASSWORD"
    problems = checks.dangling_references(docs)
    assert any("'training-api-envv' does not exist" in p for p in problems)
    assert any("has no key 'PASSWORD'" in p for p in problems)


def test_dangling_service_account_and_volume(docs: list[dict]) -> None:
    pod = find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    pod["serviceAccountName"] = "nobody"
    pod["volumes"] = []
    problems = checks.dangling_references(docs)
    assert any("'nobody' missing" in p for p in problems)
    assert any("volume 'tmp' missing" in p for p in problems)


def test_selector_that_selects_nothing(docs: list[dict]) -> None:
    find(docs, "Service", "mlflow")["spec"]["selector"] = {"app.kubernetes.io/name": "mlfow"}
    find(docs, "NetworkPolicy", "mlflow")["spec"]["podSelector"]["matchLabels"] = {"a": "b"}
    problems = checks.selector_problems(docs)
    assert any(p.startswith("Service/mlflow") for p in problems)
    assert any(p.startswith("NetworkPolicy/mlflow") for p in problems)


def test_target_port_that_no_container_opens(docs: list[dict]) -> None:
    find(docs, "Service", "training-api")["spec"]["ports"][0]["targetPort"] = 8031
    assert checks.port_problems(docs) == [
        "Service/training-api: targetPort 8031 is no port of its pods"]


def test_virtual_service_to_a_missing_host_or_port(docs: list[dict]) -> None:
    vs = find(docs, "VirtualService", "anomaly-platform")
    vs["spec"]["http"][0]["route"][0]["destination"]["host"] = "training.anomaly-platform"
    vs["spec"]["http"][2]["route"][0]["destination"]["port"]["number"] = 9000
    find(docs, "DestinationRule", "mlflow")["spec"]["host"] = "mlflow.other.svc.cluster.local"
    problems = checks.mesh_host_problems(docs, NAMESPACE)
    assert len(problems) == 3, problems


def test_container_without_probes_resources_or_non_root(docs: list[dict]) -> None:
    container = api_container(docs)
    del container["livenessProbe"]
    del container["resources"]["limits"]
    container["securityContext"]["runAsNonRoot"] = False
    worker_container(docs)["image"] = "registry.example.com/anomaly-platform/serving:latest"
    problems = checks.hardening_problems(docs)
    assert any(p.endswith("training-api: no livenessProbe") for p in problems)
    assert any("no limits" in p for p in problems)
    assert any(p.endswith("training-api: may run as root") for p in problems)
    assert any("is not pinned" in p for p in problems)


def test_dagster_values_with_a_wrong_key_or_type() -> None:
    values = dagster_values("minikube")
    values["dagsterWebserver"]["replicas"] = 2
    values["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicy"] = "Sometimes"
    errors = dagster_values_errors(values)
    assert any("replicas" in e for e in errors)
    assert any("Sometimes" in e for e in errors)


def test_definitions_that_drift_from_the_topology() -> None:
    committed = json.loads((DEPLOY / "base" / "rabbitmq" / "definitions.json").read_text())
    committed["queues"][0]["arguments"]["x-max-length"] = 10
    assert normalized(committed) != normalized(declared_topology())


def broken_copy(tmp_path: Path) -> Path:
    """A copy of deploy/ to break (the kustomizations refer to each other relatively)."""
    copy_ = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_, ignore=shutil.ignore_patterns("schemas", "*.env"))
    return copy_


def test_kustomize_refuses_a_missing_resource(tmp_path: Path) -> None:
    deploy = broken_copy(tmp_path)
    kustomization = deploy / "base" / "mlflow" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("service.yaml", "svc.yaml"))
    with pytest.raises(BuildError, match="svc.yaml"):
        kustomize(deploy / "overlays" / "minikube")


def test_a_typo_in_a_file_fails_validation_end_to_end(tmp_path: Path) -> None:
    deploy = broken_copy(tmp_path)
    hpa = deploy / "base" / "training-api" / "hpa.yaml"
    hpa.write_text(hpa.read_text().replace("averageUtilization", "averageUtilisation"))
    built = kustomize(deploy / "overlays" / "production")
    errors = [e for doc in built for e in validation_errors(doc)]
    assert any("averageUtilisation" in e for e in errors)
