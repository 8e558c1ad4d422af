"""The code location's gRPC server, starting runs from a warm fork server.

Dagster's code server starts every run in a freshly `spawn`ed Python that imports Dagster,
MLflow, scikit-learn and polars again: ~7 s of a 2-core machine per run, paid before the
first model of a burst is trained (docs/scaling.md). This entry point is `dagster api grpc`
with one change: runs are started through a `forkserver` that imported the code location
once, at server start, so a run process is forked warm. Everything else (the gRPC API, run
monitoring, termination) is Dagster's own.

    python -m pipelines.code_server --host 127.0.0.1 --port 4000

The local stack, the tests and the benchmarks run it; in Kubernetes the user-code
deployment runs plain `dagster api grpc` and the K8s run launcher starts a pod per run.
"""

import multiprocessing
import multiprocessing.forkserver
import os
import sys

# Forking a process whose BLAS pools already run threads can deadlock the child.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# The code location, and what a run imports on its first model (MLflow's client, flavor and
# REST stores: ~5 s). Importing is all the fork server does: no connection, no thread pool
# in use (polars' pool must not have run before a fork).
PRELOAD = [
    "pipelines.definitions",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.pyfunc",
    "mlflow.artifacts",
    "mlflow.models",
    "mlflow.entities",
    "mlflow.tracking",
    "mlflow.store.tracking.rest_store",
    "mlflow.store.model_registry.rest_store",
    "mlflow.store.artifact.http_artifact_repo",
    "mlflow.store.artifact.mlflow_artifacts_repo",
    "mlflow.store.artifact.models_artifact_repo",
    "git",  # GitPython: MLflow's git run-context provider
    "netrc",
]


def _use_forkserver() -> None:
    from dagster._grpc import server

    multiprocessing.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()  # import the code location now, not at run 1
    context = multiprocessing.get_context("forkserver")
    init = server.DagsterApiServer.__init__

    def with_forkserver(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self._mp_ctx = context  # Dagster hard-codes "spawn" here

    server.DagsterApiServer.__init__ = with_forkserver


def main() -> None:
    from dagster._cli import main as dagster

    _use_forkserver()
    sys.argv = [
        "dagster",
        "api",
        "grpc",
        "--module-name",
        "pipelines.definitions",
        "--attribute",
        "defs",
        "--location-name",
        "pipelines",
        *sys.argv[1:],
    ]
    dagster()


if __name__ == "__main__":
    main()
