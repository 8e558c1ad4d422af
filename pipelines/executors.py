"""Executor of the pipelines code location, chosen by the deployment configuration.

`DAGSTER_DEPLOYMENT` is read here and nowhere else: `local` (default) runs steps on the laptop,
`k8s` runs every step as a Kubernetes Job through dagster-k8s's `k8s_job_executor`, with image,
resources and environment from `DAGSTER_K8S_*` variables (docs/executors.md lists them all).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import dagster as dg
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Names Kubernetes accepts for an env var, and names whose value must come from a Secret.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY", re.I)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# The root filesystem is read-only; MLflow and scikit-learn write temporary files here.
_SCRATCH_DIR = "/tmp"
_SCRATCH_SIZE_LIMIT = "1Gi"


class ExecutorSettings(BaseSettings):
    """Executor choice and the knobs of the Kubernetes Job of each step (k8s mode only)."""

    model_config = SettingsConfigDict(
        env_prefix="DAGSTER_K8S_",
        extra="ignore",  # the Dagster Helm chart sets other DAGSTER_K8S_* variables
        frozen=True,
        validate_by_name=True,
        str_strip_whitespace=True,
    )

    deployment: Literal["local", "k8s"] = Field(
        "local",
        validation_alias="DAGSTER_DEPLOYMENT",
        description="`local`: steps run on this machine; `k8s`: one Kubernetes Job per step.",
    )
    local_executor: Literal["in_process", "multiprocess"] = Field(
        "in_process",
        validation_alias="DAGSTER_LOCAL_EXECUTOR",
        description="Local executor: steps in the run process, or one subprocess per step.",
    )
    local_max_concurrent: int | None = Field(
        None,
        ge=1,
        validation_alias="DAGSTER_LOCAL_MAX_CONCURRENT",
        description="Step subprocesses at once in multiprocess mode; default: CPU count.",
    )

    image: str | None = Field(
        None, description="Step image pinned by tag or digest; required in k8s mode."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the step container."
    )
    namespace: str | None = Field(
        None, description="Namespace of the step Jobs; default: the run launcher's."
    )
    service_account_name: str | None = Field(
        None, description="Service account of the step pods; default: the run launcher's."
    )
    env_config_maps: list[str] = Field(
        default_factory=list, description="ConfigMaps loaded with envFrom (JSON list of names)."
    )
    env_secrets: list[str] = Field(
        default_factory=list, description="Secrets loaded with envFrom (JSON list of names)."
    )
    env_vars: list[str] = Field(
        default_factory=list,
        description="Plain env vars, `NAME=value` or `NAME` (copied from the run worker).",
    )
    cpu_request: str = Field("1", description="CPU request of a step container.")
    memory_request: str = Field("2Gi", description="Memory request of a step container.")
    cpu_limit: str = Field("4", description="CPU limit of a step container.")
    memory_limit: str = Field("8Gi", description="Memory limit of a step container.")
    job_ttl_seconds: int = Field(
        3600, ge=0, description="ttlSecondsAfterFinished: finished Jobs are deleted after this."
    )
    backoff_limit: int = Field(
        0, ge=0, description="Pod retries by Kubernetes; 0 leaves retries to Dagster."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels of step Jobs and pods (JSON object)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector of step pods (JSON object)."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of step pods (JSON list)."
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="Step pods at once within one run; default: no limit."
    )
    run_as_user: int = Field(10001, ge=1, description="Non-root UID (and GID) of step pods.")
    read_only_root_filesystem: bool = Field(
        True, description=f"Read-only root filesystem; {_SCRATCH_DIR} stays writable."
    )

    @model_validator(mode="after")
    def _check_k8s(self) -> ExecutorSettings:
        # k8s knobs are checked only when they are used, so a laptop never imports kubernetes.
        if self.deployment == "k8s":
            _check_image(self.image)
            _check_resources(self)
            _check_env_vars(self.env_vars)
            _check_labels(self.labels)
        return self


def _check_image(image: str | None) -> None:
    if not image:
        raise ValueError(
            "DAGSTER_K8S_IMAGE is required when DAGSTER_DEPLOYMENT=k8s: set it to the pipelines "
            "image pinned by tag or digest (e.g. registry.example.com/anomaly-pipelines:1.4.2)."
        )
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and (":" not in last or last.endswith(":latest")):
        raise ValueError(
            f"DAGSTER_K8S_IMAGE={image!r} must be pinned by a tag other than `latest` or by a "
            "digest: every step of a run must run the same code."
        )


def _check_resources(s: ExecutorSettings) -> None:
    from kubernetes.utils.quantity import parse_quantity

    parsed = {}
    for field in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
        value = getattr(s, field)
        try:
            parsed[field] = parse_quantity(value)
        except ValueError:
            parsed[field] = None
        if parsed[field] is None or parsed[field] <= 0:
            raise ValueError(
                f"DAGSTER_K8S_{field.upper()}={value!r} is not a positive Kubernetes quantity "
                "(e.g. 500m, 1, 2Gi, 512Mi)."
            )
    for kind in ("cpu", "memory"):
        if parsed[f"{kind}_request"] > parsed[f"{kind}_limit"]:
            raise ValueError(f"DAGSTER_K8S_{kind.upper()}_REQUEST exceeds the limit.")


def _check_env_vars(env_vars: list[str]) -> None:
    for item in env_vars:
        name = item.split("=", 1)[0]
        if not _ENV_NAME.match(name):
            raise ValueError(f"DAGSTER_K8S_ENV_VARS: {name!r} is not a valid env var name.")
        # A plain env var lands in clear text in the Job spec; secrets go by reference.
        if _SECRET_NAME.search(name):
            raise ValueError(
                f"DAGSTER_K8S_ENV_VARS: {name!r} looks like a secret; put it in a Kubernetes "
                "Secret and name that Secret in DAGSTER_K8S_ENV_SECRETS."
            )


def _check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"DAGSTER_K8S_LABELS: {key}={value!r} is not a valid label.")


def _security_contexts(s: ExecutorSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pod and container securityContext meeting the `restricted` Pod Security Standard."""
    pod = {
        "runAsNonRoot": True,
        # A numeric UID lets the kubelet verify runAsNonRoot whatever USER the image names.
        "runAsUser": s.run_as_user,
        "runAsGroup": s.run_as_user,
        "fsGroup": s.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": s.read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container


def _step_k8s_config(s: ExecutorSettings) -> dict[str, Any]:
    pod_security, container_security = _security_contexts(s)
    container: dict[str, Any] = {
        "resources": {
            "requests": {"cpu": s.cpu_request, "memory": s.memory_request},
            "limits": {"cpu": s.cpu_limit, "memory": s.memory_limit},
        },
        "securityContext": container_security,
    }
    pod: dict[str, Any] = {
        "securityContext": pod_security,
        # Steps do not call the Kubernetes API; an op that does can override this by tag.
        "automountServiceAccountToken": False,
    }
    if s.read_only_root_filesystem:
        container["volumeMounts"] = [{"name": "scratch", "mountPath": _SCRATCH_DIR}]
        pod["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": _SCRATCH_SIZE_LIMIT}}]
    if s.node_selector:
        pod["nodeSelector"] = s.node_selector
    if s.tolerations:
        pod["tolerations"] = s.tolerations
    return {
        "container_config": container,
        "pod_spec_config": pod,
        "pod_template_spec_metadata": {"labels": s.labels},
        "job_metadata": {"labels": s.labels},
        "job_spec_config": {
            "ttlSecondsAfterFinished": s.job_ttl_seconds,
            "backoffLimit": s.backoff_limit,
        },
    }


def build_executor(settings: ExecutorSettings | None = None) -> dg.ExecutorDefinition:
    """The executor of every job of the code location, from `settings` or the environment."""
    s = settings or ExecutorSettings()
    if s.deployment == "local":
        if s.local_executor == "multiprocess":
            return dg.multiprocess_executor.configured({"max_concurrent": s.local_max_concurrent})
        # A model asset run has one step: a step subprocess would only pay the ~7 s of imports
        # (dagster, mlflow, scikit-learn, polars) a second time.
        return dg.in_process_executor

    from dagster_k8s import k8s_job_executor
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    step_k8s_config = _step_k8s_config(s)
    # Fail at code-location load, not at the first step, on a misspelt toleration key.
    UserDefinedDagsterK8sConfig.from_dict(step_k8s_config)
    config: dict[str, Any] = {
        "job_image": s.image,
        "image_pull_policy": s.image_pull_policy,
        "env_config_maps": s.env_config_maps,
        "env_secrets": s.env_secrets,
        "env_vars": s.env_vars,
        "step_k8s_config": step_k8s_config,
    }
    optional = {
        "job_namespace": s.namespace,
        "service_account_name": s.service_account_name,
        "max_concurrent": s.max_concurrent,
    }
    config.update({key: value for key, value in optional.items() if value is not None})
    return k8s_job_executor.configured(config)
