"""Real services for the integration tests, each started once per session on loopback ports.

Ports differ from the local stack's defaults, so a running `make up` does not interfere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.1)


class Process:
    """A child process whose output goes to a log file, stopped as a group."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class RabbitMQ(Process):
    def __init__(self, base: Path, amqp_port: int, mgmt_port: int) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base, self.amqp_port, self.mgmt_port = base, amqp_port, mgmt_port
        script = str(REPO / "scripts" / "rabbitmq-node")
        super().__init__(
            "rabbitmq", [script, str(base / "node"), str(amqp_port), str(mgmt_port)], base, {}
        )
        self.url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/"

    def start(self) -> None:
        if port_open(self.amqp_port):
            raise RuntimeError(f"port {self.amqp_port} is taken; stop what uses it")
        super().start()
        # The management API answers once the node and its plugins are up.
        try:
            wait_until(self._healthy, 90, f"RabbitMQ on {self.amqp_port}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"RabbitMQ exited:\n{self.log_tail()}")
        try:
            r = httpx.get(
                f"http://127.0.0.1:{self.mgmt_port}/api/overview",
                auth=("guest", "guest"),
                timeout=1,
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and port_open(self.amqp_port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        super().stop(sig, timeout)
        wait_until(lambda: not port_open(self.amqp_port), 30, "RabbitMQ stop")

    def wait_queue_empty(self, queue: str, timeout: float = 20) -> None:
        """The management API refreshes its counts every few seconds."""
        wait_until(lambda: self.queue_depth(queue) == 0, timeout, f"{queue} to be empty")

    def queue_depth(self, queue: str) -> int:
        r = httpx.get(
            f"http://127.0.0.1:{self.mgmt_port}/api/queues/%2F/{queue}",
            auth=("guest", "guest"),
            timeout=5,
        )
        r.raise_for_status()
        return int(r.json().get("messages", 0))


class TrainingApi(Process):
    def __init__(self, state_dir: Path, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "training_api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        super().__init__("training_api", argv, state_dir, {"STATE_DIR": str(state_dir), **env})

    def start(self) -> None:
        super().start()
        try:
            wait_until(self._healthy, 60, "training API")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"training API exited:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.base_url}/liveness", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def restart(self) -> None:
        self.stop()
        self.start()


def _as_user(user: str) -> list[str]:
    """Run as `user` when we are root (PostgreSQL refuses to run as root)."""
    return (
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        if os.geteuid() == 0
        else []
    )


class PostgreSQL(Process):
    """A throwaway PostgreSQL cluster from the Debian package, trust auth on loopback."""

    def __init__(self, base: Path, port: int) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: run `make deps`")
        self.bin = bins[-1].parent
        self.data, self.port = base / "data", port
        super().__init__(
            "postgresql",
            [
                *_as_user("postgres"),
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(base),
            ],
            base,
            {},
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.data.parent, "postgres", "postgres")
            subprocess.run(
                [
                    *_as_user("postgres"),
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
            )
        super().start()
        wait_until(lambda: port_open(self.port), 30, "PostgreSQL")


class MotoS3(Process):
    """moto's S3 server: the S3 HTTP API on loopback, for the s3:// data root."""

    def __init__(self, base: Path, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        super().__init__(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            base,
            {},
        )

    def start(self) -> None:
        super().start()
        wait_until(lambda: port_open(self.port), 30, "moto S3 server")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class MlflowServer(Process):
    """`mlflow server` with a SQLite backend and a local artifact root, as `make up` runs it."""

    def __init__(self, base: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        super().__init__("mlflow", [
            mlflow, "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
            # a local artifact root the clients write to and read from directly, as make up
            "--default-artifact-root", (base / "artifacts").as_uri(), "--no-serve-artifacts",
            "--workers", "1",
        ], base, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                  "MLFLOW_DISABLE_TELEMETRY": "true"})

    def start(self) -> None:
        super().start()
        try:
            wait_until(lambda: self._alive() and _http_ok(f"{self.url}/health"), 90, "MLflow")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"MLflow exited:\n{self.log_tail()}")
        return True


class Dagster:
    """A real Dagster instance: the code location's gRPC server (pipelines/code_server.py),
    the daemon and the webserver, with DAGSTER_HOME holding a copy of the repo's dagster.yaml
    and a workspace like the repo's pointing at this code server's port (port + 1000)."""

    def __init__(self, home: Path, port: int, env: dict[str, str]) -> None:
        import yaml

        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        self.home, self.port, self.code_port = home, port, port + 1000
        self.url = f"http://127.0.0.1:{port}"
        workspace_doc = yaml.safe_load((REPO / "workspace.yaml").read_text())
        workspace_doc["load_from"][0]["grpc_server"]["port"] = self.code_port
        (home / "workspace.yaml").write_text(yaml.safe_dump(workspace_doc))
        bindir = Path(sys.executable).parent
        env = {"DAGSTER_HOME": str(home), **env}
        workspace = ["-w", str(home / "workspace.yaml")]
        self.code = Process("dagster-code", [
            sys.executable, "-m", "pipelines.code_server", "--host", "127.0.0.1",
            "--port", str(self.code_port),
        ], home, env)
        self.daemon = Process("dagster-daemon", [str(bindir / "dagster-daemon"), "run",
                                                 *workspace], home, env)
        self.webserver = Process("dagster-webserver", [
            str(bindir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), *workspace,
        ], home, env)

    def start(self) -> None:
        # Creating the SQLite storage first: the webserver and the daemon would race to.
        subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"],
                       env={**os.environ, **self.daemon.env}, check=True, capture_output=True)
        if port_open(self.code_port):
            raise RuntimeError(f"port {self.code_port} is taken; stop what uses it")
        self.code.start()
        try:
            wait_until(lambda: self._up(self.code) and port_open(self.code_port), 120,
                       "Dagster code server")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.code.log_tail()}") from None
        self.webserver.start()
        self.daemon.start()
        try:
            wait_until(self._loaded, 180, "Dagster webserver and code location")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.webserver.log_tail()}") from None

    @staticmethod
    def _up(p: Process) -> bool:
        if p.proc is not None and p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited:\n{p.log_tail()}")
        return True

    def _loaded(self) -> bool:
        for p in (self.code, self.webserver, self.daemon):
            self._up(p)
        try:
            data = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries {"
                                " locationOrLoadError { __typename } } } } }", timeout=3)
        except httpx.HTTPError:
            return False
        entries = data["workspaceOrError"]["locationEntries"]
        return bool(entries) and all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                                     for e in entries)

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        r = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                       timeout=timeout)
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise RuntimeError(body["errors"])
        return body["data"]

    def stop(self) -> None:
        self.daemon.stop()
        self.webserver.stop()
        self.code.stop()


class RayServe(Process):
    """`serve run` of serving/serve_config.yaml on its own local Ray, on another port."""

    def __init__(self, base: Path, port: int, env: dict[str, str]) -> None:
        import yaml

        config = yaml.safe_load((REPO / "serving" / "serve_config.yaml").read_text())
        config["http_options"]["port"] = port
        base.mkdir(parents=True, exist_ok=True)
        path = base / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        serve = str(Path(sys.executable).with_name("serve"))
        super().__init__("serve", [serve, "run", str(path)], base,
                         {"RAY_USAGE_STATS_ENABLED": "0", **env})

    def start(self) -> None:
        # Its own local Ray: never join a cluster named by the environment.
        os.environ.pop("RAY_ADDRESS", None)
        super().start()
        try:
            wait_until(lambda: self._alive() and _http_ok(f"{self.url}/readiness"), 180,
                       "Ray Serve")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail(60)}") from None

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"serve run exited:\n{self.log_tail(60)}")
        return True

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> None:
        super().stop(sig, timeout)  # SIGINT: serve run shuts Serve and its Ray down
