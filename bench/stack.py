"""What the serving benches share: the real backends, Serve's fast mode and model seeding.

bench/serving.py and bench/load.py start the same stack (a private RabbitMQ node, an MLflow
server with SQLite and local artifacts, `serve run` of serving/serve_config.yaml) on their own
ports, and register models the way the pipeline does, in the bench's own process.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.services import MlflowServer, RabbitMQ  # noqa: E402

START = 1_733_000_000  # first training timestamp (Unix seconds)
LEVEL, NOISE = 0.3, 0.05  # every seeded series: LEVEL + NOISE * N(0, 1)


def register_models(tracking_uri: str, series: list[str]) -> float:
    """Train and register one statistical model per series, as the pipeline does; seconds."""
    import polars as pl

    from core.contracts import TrainingConfig
    from core.training import train
    from pipelines.registry import Registry
    from pipelines.training import pip_requirements

    registry = Registry(tracking_uri, retention=10)  # imports mlflow, which sets its logging
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    requirements = pip_requirements()
    started = time.perf_counter()
    for i, series_id in enumerate(series):
        rng = np.random.default_rng(i)
        values = LEVEL + NOISE * rng.standard_normal(10_000)
        frame = pl.DataFrame({"timestamp": START + 300 * np.arange(values.size), "value": values})
        result = train(frame, TrainingConfig(algorithm="statistical"))
        job_id = str(uuid.uuid4())
        version = registry.log_and_register(
            series_id,
            result,
            run_tags={"series_id": series_id, "job_id": job_id, "dagster_run_id": "bench"},
            version_tags={"job_id": job_id, "algorithm": "statistical"},
            pip_requirements=requirements,
        )
        registry.promote(series_id, version.version)
    return time.perf_counter() - started


def haproxy_files(folder: Path) -> dict[str, str]:
    """HAProxy's files in `folder` (Ray adds a node-id folder; a socket path holds ≤ 97 bytes)."""
    names = {"CONFIG_FILE_LOC": "haproxy.cfg", "SOCKET_PATH": "admin.sock",
             "SERVER_STATE_FILE": "server-state", "METRICS_SOCKET_PATH": "metrics.sock"}
    files = {f"RAY_SERVE_HAPROXY_{k}": str(folder / v) for k, v in names.items()}
    return files | {"RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder)}


def fast_mode_env(ports: dict[str, str], haproxy: Path) -> dict[str, str]:
    """Serve's high-throughput mode as `make up` runs it, with every extra port Ray binds
    moved to `ports` (each bench its own, so benches and test sessions can run side by side)."""
    return ports | haproxy_files(haproxy) | {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    }


def quiet_mlflow() -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # keep stdout to the table


def start_backends(work: Path, amqp_port: int, mgmt_port: int,
                   mlflow_port: int) -> tuple[RabbitMQ, MlflowServer]:
    """RabbitMQ and MLflow, started side by side under `work` (world-readable: the node runs
    as user rabbitmq). On failure whatever did start is stopped again."""
    work.chmod(0o755)
    (work / "mlflow").mkdir(exist_ok=True)
    broker = RabbitMQ(work / "rabbitmq", amqp_port, mgmt_port)
    mlflow = MlflowServer(work / "mlflow", mlflow_port)
    quiet_mlflow()
    try:
        with ThreadPoolExecutor(2) as pool:
            for step in [pool.submit(broker.start), pool.submit(mlflow.start)]:
                step.result()
    except BaseException:
        stop_all(mlflow, broker)
        raise
    return broker, mlflow


def stop_all(*services) -> None:
    """Stop each service whatever happens to another."""
    for service in services:
        try:
            service.stop()
        except Exception as exc:
            sys.stderr.write(f"stopping {getattr(service, 'name', service)}: {exc}\n")
