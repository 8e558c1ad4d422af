"""The executor choice, and the Kubernetes Job dagster-k8s would create for a step in k8s mode.

No cluster: the real step handler of the configured `k8s_job_executor` launches one step, its
Kubernetes client is replaced by a mock that keeps the Job body, and the body is validated
against the Kubernetes API schema with `kubernetes-validate`.
"""

from __future__ import annotations

import os
from unittest import mock

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
from dagster._core.definitions.reconstruct import reconstructable
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from kubernetes_validate.utils import latest_version
from pydantic import ValidationError

from pipelines.executors import ExecutorSettings, build_executor

IMAGE = "registry.example.com/anomaly-pipelines:1.4.2"
MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"
# The Kubernetes versions the Job is validated against: the oldest we support and the newest
# schema kubernetes-validate ships.
K8S_VERSIONS = sorted({"1.30", ".".join(latest_version().split(".")[:2])})

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: fake
contexts: [{name: fake, context: {cluster: fake}}]
clusters: [{name: fake, cluster: {server: "https://127.0.0.1:6443"}}]
"""


@dg.op
def train_model() -> None:
    """Stands for the one step of a model asset run."""


@dg.job
def train_job() -> None:
    train_model()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets reaches ExecutorSettings."""
    for name in list(os.environ):
        if name.startswith(("DAGSTER_K8S_", "DAGSTER_LOCAL_")) or name == "DAGSTER_DEPLOYMENT":
            monkeypatch.delenv(name)


@pytest.fixture
def k8s_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DAGSTER_DEPLOYMENT": "k8s",
        "DAGSTER_K8S_IMAGE": IMAGE,
        "DAGSTER_K8S_NAMESPACE": "pipelines",
        "DAGSTER_K8S_SERVICE_ACCOUNT_NAME": "pipelines-step",
        "DAGSTER_K8S_ENV_CONFIG_MAPS": '["pipelines-env"]',
        "DAGSTER_K8S_ENV_SECRETS": '["pipelines-s3", "pipelines-rabbitmq"]',
        "DAGSTER_K8S_ENV_VARS": f'["MLFLOW_TRACKING_URI={MLFLOW_URI}", "LOG_LEVEL"]',
        "LOG_LEVEL": "INFO",  # copied from the run worker into the step pod
        "DAGSTER_K8S_LABELS": '{"app.kubernetes.io/part-of": "anomaly-platform"}',
        "DAGSTER_K8S_NODE_SELECTOR": '{"workload": "training"}',
        "DAGSTER_K8S_TOLERATIONS": (
            '[{"key": "training", "operator": "Exists", "effect": "NoSchedule"}]'
        ),
        "DAGSTER_K8S_JOB_TTL_SECONDS": "600",
        "DAGSTER_K8S_MAX_CONCURRENT": "4",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def k8s_instance(tmp_path):
    """An instance with the K8sRunLauncher, configured the way the Dagster Helm chart does."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    launcher = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "instance_config_map": "dagster-instance",
            "postgres_password_secret": "dagster-postgresql-secret",
            "dagster_home": "/opt/dagster/dagster_home",
            "job_namespace": "dagster",
            "service_account_name": "dagster",
            "env_config_maps": ["dagster-pipeline-env"],
            "load_incluster_config": False,
            "kubeconfig_file": str(kubeconfig),
        },
    }
    # The launcher and the step handler load the kubeconfig into the client's global default.
    default = kubernetes.client.Configuration.get_default_copy()
    try:
        with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
            yield instance
    finally:
        kubernetes.client.Configuration.set_default(default)


def _resolved_config(executor_def: dg.ExecutorDefinition) -> dict:
    """The executor config a run of a job using `executor_def` gets (no run config given)."""
    run_config = ResolvedRunConfig.build(train_job.with_executor_def(executor_def), {})
    return dict(run_config.execution.execution_engine_config)


def _launch_step_job(executor_def: dg.ExecutorDefinition, instance) -> tuple[dict, str]:
    """The Job body and namespace dagster-k8s's step handler sends to the API for one step."""
    recon_job = reconstructable(train_job)
    executor = executor_def.executor_creation_fn(
        InitExecutorContext(
            job=recon_job,
            executor_def=executor_def,
            executor_config=_resolved_config(executor_def),
            instance=instance,
        )
    )
    run = create_run_for_test(
        instance, job_name="train_job", job_code_origin=recon_job.get_python_origin()
    )
    plan = create_execution_plan(recon_job)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(
            job=recon_job,
            dagster_run=run,
            instance=instance,
            execution_plan=plan,
            raise_on_error=True,
            retry_mode=RetryMode.DISABLED,
        ),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    context = StepHandlerContext(
        instance=instance,
        plan_context=plan_context,
        steps=plan.steps,
        execute_step_args=ExecuteStepArgs(
            recon_job.get_python_origin(), run.run_id, ["train_model"], instance.get_ref()
        ),
    )
    # The step handler the executor really uses; only its Kubernetes API client is replaced.
    handler = executor._step_handler
    batch_api = mock.MagicMock()
    with mock.patch.object(handler._api_client, "batch_api", batch_api):
        list(handler.launch_step(context))
    call = batch_api.create_namespaced_job.call_args
    body = kubernetes.client.ApiClient().sanitize_for_serialization(call.kwargs["body"])
    return body, call.kwargs["namespace"]


@pytest.mark.usefixtures("k8s_env")
def test_k8s_step_job_is_a_valid_kubernetes_job(k8s_instance) -> None:
    executor_def = build_executor()
    assert executor_def.name == "k8s"

    manifest, namespace = _launch_step_job(executor_def, k8s_instance)

    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)

    assert namespace == "pipelines"
    assert manifest["kind"] == "Job"
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 600
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "anomaly-platform"

    pod = manifest["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "anomaly-platform"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "pipelines-step"
    assert spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {"workload": "training"}
    assert spec["tolerations"] == [
        {"key": "training", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"][:3] == ["dagster", "api", "execute_step"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]

    # The run launcher's ConfigMap comes first, then the executor's; secrets only by reference.
    assert container["envFrom"] == [
        {"configMapRef": {"name": "dagster-pipeline-env"}},
        {"configMapRef": {"name": "pipelines-env"}},
        {"secretRef": {"name": "pipelines-s3"}},
        {"secretRef": {"name": "pipelines-rabbitmq"}},
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == MLFLOW_URI
    assert env["LOG_LEVEL"]["value"] == "INFO"
    assert env["DAGSTER_RUN_STEP_KEY"]["value"] == "train_model"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "dagster-postgresql-secret"
    )


@pytest.mark.usefixtures("k8s_env")
def test_k8s_resolved_config() -> None:
    config = _resolved_config(build_executor())
    assert config["job_image"] == IMAGE
    assert config["job_namespace"] == "pipelines"
    assert config["max_concurrent"] == 4
    assert config["env_secrets"] == ["pipelines-s3", "pipelines-rabbitmq"]
    assert config["step_k8s_config"]["job_spec_config"]["ttlSecondsAfterFinished"] == 600


@pytest.mark.usefixtures("k8s_env")
def test_writable_root_filesystem_drops_the_scratch_volume(
    monkeypatch: pytest.MonkeyPatch, k8s_instance
) -> None:
    monkeypatch.setenv("DAGSTER_K8S_READ_ONLY_ROOT_FILESYSTEM", "false")
    manifest, _ = _launch_step_job(build_executor(), k8s_instance)
    kubernetes_validate.validate(manifest, K8S_VERSIONS[0], strict=True)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert not manifest["spec"]["template"]["spec"].get("volumes")


def test_local_default_is_in_process() -> None:
    assert ExecutorSettings().deployment == "local"
    assert build_executor() is dg.in_process_executor


def test_local_multiprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_LOCAL_EXECUTOR", "multiprocess")
    monkeypatch.setenv("DAGSTER_LOCAL_MAX_CONCURRENT", "2")
    executor_def = build_executor()
    assert executor_def.name == "multiprocess"
    assert _resolved_config(executor_def)["max_concurrent"] == 2


def test_local_mode_ignores_k8s_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_K8S_MEMORY_LIMIT", "lots")
    assert build_executor() is dg.in_process_executor


def test_k8s_without_image_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "k8s")
    with pytest.raises(ValidationError, match="DAGSTER_K8S_IMAGE is required"):
        build_executor()


@pytest.mark.parametrize(
    "image", ["registry.example.com/anomaly-pipelines", "anomaly-pipelines:latest"]
)
def test_k8s_image_must_be_pinned(image: str) -> None:
    with pytest.raises(ValidationError, match="pinned"):
        ExecutorSettings(deployment="k8s", image=image)


def test_k8s_image_by_digest_or_registry_port_is_accepted() -> None:
    digest = "sha256:" + "0" * 64
    ExecutorSettings(deployment="k8s", image=f"registry.example.com/anomaly-pipelines@{digest}")
    ExecutorSettings(deployment="k8s", image="registry.example.com:5000/anomaly-pipelines:1.4.2")


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_limit", "8 GB"), ("cpu_request", "one"), ("memory_request", "-2Gi")],
)
def test_invalid_resource_quantity_is_rejected(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=f"DAGSTER_K8S_{field.upper()}"):
        ExecutorSettings(deployment="k8s", image=IMAGE, **{field: value})


def test_request_above_limit_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "k8s")
    monkeypatch.setenv("DAGSTER_K8S_IMAGE", IMAGE)
    monkeypatch.setenv("DAGSTER_K8S_MEMORY_REQUEST", "16Gi")
    with pytest.raises(ValidationError, match="MEMORY_REQUEST exceeds the limit"):
        ExecutorSettings()


def test_secret_in_plain_env_var_is_rejected() -> None:
    with pytest.raises(ValidationError, match="DAGSTER_K8S_ENV_SECRETS"):
        ExecutorSettings(deployment="k8s", image=IMAGE, env_vars=["AWS_SECRET_ACCESS_KEY=x"])


def test_misspelt_toleration_fails_at_build() -> None:
    settings = ExecutorSettings(
        deployment="k8s", image=IMAGE, tolerations=[{"key": "training", "efect": "NoSchedule"}]
    )
    with pytest.raises(Exception, match="efect"):
        build_executor(settings)
