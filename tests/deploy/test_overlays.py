"""Every overlay builds, every object validates against its schema, and the references
between objects hold. No cluster: kustomize, kubernetes-validate and the CRD schemas."""

from __future__ import annotations

import filecmp
import subprocess

import pytest

from tests.deploy import checks
from tests.deploy.manifests import (
    DEPLOY,
    NAMESPACE,
    OVERLAYS,
    REPO,
    by_kind,
    cluster,
    kustomize,
    overlay,
    secrets,
)
from tests.deploy.schemas import SCHEMAS, SHARED_SCHEMAS, all_validation_errors

per_overlay = pytest.mark.parametrize("name", OVERLAYS)


@per_overlay
def test_overlay_builds_into_the_namespace(name: str) -> None:
    docs = overlay(name)
    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "StatefulSet", "Deployment", "RayService", "VirtualService",
            "NetworkPolicy", "PrometheusRule"} <= kinds
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "anomaly-platform"


@per_overlay
def test_every_object_validates_against_its_schema(name: str) -> None:
    assert all_validation_errors(cluster(name)) == []


@per_overlay
def test_references_resolve(name: str) -> None:
    assert checks.dangling_references(cluster(name)) == []


@per_overlay
def test_selectors_select_something(name: str) -> None:
    assert checks.selector_problems(cluster(name)) == []


@per_overlay
def test_service_target_ports_are_container_ports(name: str) -> None:
    assert checks.port_problems(cluster(name)) == []


@per_overlay
def test_mesh_hosts_exist(name: str) -> None:
    assert checks.mesh_host_problems(cluster(name), NAMESPACE) == []


@per_overlay
def test_containers_are_hardened(name: str) -> None:
    assert checks.hardening_problems(cluster(name)) == []


@per_overlay
def test_default_deny_network_policy(name: str) -> None:
    deny = [d for d in by_kind(overlay(name), "NetworkPolicy") if d["spec"]["podSelector"] == {}
            and set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not d["spec"].get("ingress") and not d["spec"].get("egress")]
    assert len(deny) == 1


@per_overlay
def test_strict_mtls(name: str) -> None:
    namespace_wide = [d for d in by_kind(overlay(name), "PeerAuthentication")
                      if "selector" not in d["spec"]]
    assert [d["spec"]["mtls"]["mode"] for d in namespace_wide] == ["STRICT"]


def test_production_is_highly_available() -> None:
    docs = overlay("production")
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"]
                for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    assert replicas["training-api"] >= 2 and replicas["mlflow"] >= 2
    assert replicas["rabbitmq"] == 3 and replicas["minio"] == 4
    pdbs = {d["metadata"]["name"] for d in by_kind(docs, "PodDisruptionBudget")}
    assert {"training-api", "mlflow", "rabbitmq", "minio", "serving-predictor"} <= pdbs
    for workload in ("training-api", "mlflow", "rabbitmq", "minio"):
        doc = next(d for d in docs if d["metadata"]["name"] == workload
                   and d["kind"] in ("Deployment", "StatefulSet"))
        keys = {c["topologyKey"] for c in doc["spec"]["template"]["spec"]
                ["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in keys
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["minReplicas"] >= 2
    worker = by_kind(docs, "RayService")[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["minReplicas"] >= 2
    container = worker["template"]["spec"]["containers"][0]
    # The predictor sizing of the design: 500m/1Gi requested, 2 CPU/4Gi limit.
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}


def test_secrets_and_argocd_build_and_validate() -> None:
    assert {d["metadata"]["name"] for d in secrets()} >= {
        "rabbitmq", "postgresql", "minio", "mlflow", "training-api", "serving", "pipelines",
        "dagster-postgresql-secret"}
    argocd = kustomize(DEPLOY / "argocd")
    assert all_validation_errors([*secrets(), *argocd]) == []
    for app in by_kind(argocd, "Application"):
        sources = app["spec"].get("sources") or [app["spec"]["source"]]
        for source in sources:
            if "path" in source:
                assert (REPO / source["path"] / "kustomization.yaml").exists()
            for value_file in source.get("helm", {}).get("valueFiles", []):
                assert (REPO / value_file.removeprefix("$values/")).exists()
        assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_no_secret_in_git() -> None:
    for example in (DEPLOY / "secrets").glob("*.env.example"):
        env = example.with_suffix("")
        ignored = subprocess.run(["git", "check-ignore", "-q", str(env)], cwd=REPO)
        assert ignored.returncode == 0, f"{env.name} is not git-ignored"
        for line in example.read_text().splitlines():
            key, _, value = line.partition("=")
            if any(word in key for word in ("PASS", "SECRET", "COOKIE", "password")):
                assert value == "CHANGE_ME", line
    for name in OVERLAYS:
        assert not by_kind(overlay(name), "Secret"), "Secrets belong to deploy/secrets only"


def test_schema_copies_are_schemas_and_match_the_shared_folder() -> None:
    """The copies are valid JSON Schemas; where the shared folder they were copied from sits
    beside the repository (not in a clean clone), they are still byte for byte the same."""
    import json

    import jsonschema

    copies = sorted(SCHEMAS.rglob("*.json"))
    assert copies
    for copy in copies:
        schema = json.loads(copy.read_text())
        jsonschema.validators.validator_for(schema).check_schema(schema)
        if SHARED_SCHEMAS.is_dir():
            original = SHARED_SCHEMAS / copy.relative_to(SCHEMAS)
            assert filecmp.cmp(copy, original, shallow=False), copy
