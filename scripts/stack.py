"""Start, stop and inspect the local stack defined in stack/supervisord.conf.

    .venv/bin/python scripts/stack.py up|down|status      (or: make up / make down / make status)

`up` starts supervisord if needed, then each program in order, skipping any whose health check
already answers (e.g. a RabbitMQ the user runs on 5672), and waits until all are healthy.
`down` stops the programs and supervisord; services it did not start are left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import httpx
from supervisor.xmlrpc import SupervisorTransport

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "stack" / "supervisord.conf"
STATE = ROOT / ".state"
LOGS = STATE / "logs"
# Must match stack/supervisord.conf, which spells it from its own folder.
SOCK = f"{ROOT}/stack/../.state/supervisor.sock"
PIDFILE = STATE / "supervisord.pid"
TIMEOUT = float(os.environ.get("STACK_TIMEOUT", "120"))
# Folders the programs expect to exist (supervisord needs the log folder before it starts).
FOLDERS = [LOGS, STATE / "rabbitmq", STATE / "mlflow" / "artifacts", STATE / "dagster"]
DAGSTER_HOME = STATE / "dagster"


@dataclass(frozen=True)
class Program:
    name: str  # the [program:NAME] in stack/supervisord.conf
    probe: str  # amqp://host:port (AMQP handshake), tcp://host:port or an http URL (200)
    url: str  # what to print once it is up
    needs: tuple[str, ...] = ()  # programs that must be healthy before this one starts


# Start order. Adding a program: a [program:...] section in supervisord.conf and a line here.
PROGRAMS = [
    Program(
        "rabbitmq",
        "amqp://127.0.0.1:5672",
        "RabbitMQ management  http://127.0.0.1:15672  (user guest, password guest)",
    ),
    Program("mlflow", "http://127.0.0.1:5000/health", "MLflow UI            http://127.0.0.1:5000"),
    Program(
        "api",
        "http://127.0.0.1:8030/health",
        "Training API docs    http://127.0.0.1:8030/docs",
        needs=("rabbitmq", "mlflow"),
    ),
    Program(
        "dagster-code",
        "tcp://127.0.0.1:4000",
        "Dagster code server  127.0.0.1:4000 (gRPC; restart it after changing pipelines/)",
        needs=("rabbitmq", "mlflow"),
    ),
    Program(
        "dagster-webserver",
        "http://127.0.0.1:3000/server_info",
        "Dagster UI           http://127.0.0.1:3000",
        needs=("dagster-code",),
    ),
    Program(
        "dagster-daemon",
        "dagster-daemon://127.0.0.1:3000",
        "Dagster daemon       sensors, schedule and run queue (see Deployment > Daemons)",
        needs=("dagster-webserver",),
    ),
    Program(
        "serve",
        "http://127.0.0.1:8000/readiness",
        "Ray Serve            http://127.0.0.1:8000/docs  (dashboard http://127.0.0.1:8265)",
        needs=("rabbitmq", "mlflow"),
    ),
]
BY_NAME = {p.name: p for p in PROGRAMS}


def emit(text: str, stream=sys.stdout) -> None:
    # A CLI's output, not debugging leftovers (the project's lint bans print()).
    stream.write(text + "\n")
    stream.flush()


def say(msg: str) -> None:
    emit(f"stack: {msg}")


def healthy(probe: str) -> bool:
    u = urlsplit(probe)
    if u.scheme == "amqp":
        return amqp_answers(u.hostname or "127.0.0.1", u.port or 5672)
    if u.scheme == "dagster-daemon":
        return daemon_healthy(f"http://{u.netloc}/graphql")
    if u.scheme == "tcp":
        try:
            socket.create_connection((u.hostname or "127.0.0.1", u.port or 0), timeout=3).close()
            return True
        except OSError:
            return False
    try:
        # trust_env=False: an HTTP(S)_PROXY in the environment must not catch loopback calls.
        return httpx.get(probe, timeout=3, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def amqp_answers(host: str, port: int) -> bool:
    """True if an AMQP 0-9-1 broker answers the protocol header with connection.start.

    A plain TCP connect would also accept any other server squatting on the port. The price:
    RabbitMQ logs a warning ("client unexpectedly closed TCP connection") for each probe.
    """
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            frame = b""
            while len(frame) < 11 and (chunk := s.recv(11 - len(frame))):
                frame += chunk
    except OSError:
        return False
    # Method frame (type 1) on channel 0 carrying class 10 method 10 (connection.start).
    return frame[:3] == b"\x01\x00\x00" and frame[7:11] == b"\x00\x0a\x00\x0a"


def daemon_healthy(graphql: str) -> bool:
    """The daemon has no port: ask the webserver whether its sensor daemon heartbeats."""
    query = (
        "{ instance { daemonHealth { sensorDaemonStatus: daemonStatus(daemonType: "
        '"SENSOR") { healthy } } } }'
    )
    try:
        r = httpx.post(graphql, json={"query": query}, timeout=3, trust_env=False)
        status = r.json()["data"]["instance"]["daemonHealth"]["sensorDaemonStatus"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return False
    return bool(status.get("healthy"))


def prepare_dagster_home() -> None:
    """The instance config lives in the repo; its storage is created before the webserver
    and the daemon start (both would try at once on a fresh folder)."""
    shutil.copy(ROOT / "dagster.yaml", DAGSTER_HOME / "dagster.yaml")
    subprocess.run(
        [ROOT / ".venv/bin/dagster", "instance", "migrate"],
        check=True,
        env={**os.environ, "DAGSTER_HOME": str(DAGSTER_HOME)},
        stdout=subprocess.DEVNULL,
    )


def port_taken(probe: str) -> bool:
    u = urlsplit(probe)
    if u.scheme == "dagster-daemon":  # probed through the webserver's port
        return False
    try:
        with socket.create_connection((u.hostname, u.port), timeout=1):
            return True
    except OSError:
        return False


def rpc() -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(None, None, serverurl=f"unix://{SOCK}")
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport)


def supervisord_running() -> bool:
    try:
        rpc().supervisor.getState()
        return True
    except OSError:  # no socket, or a stale one nobody listens on
        return False


def fail(msg: str, program: str | None = None) -> NoReturn:
    emit(f"stack: ERROR: {msg}", sys.stderr)
    log = LOGS / f"{program}.log"
    if program and log.exists():
        lines = log.read_text(errors="replace").splitlines()[-30:]
        emit(f"--- last lines of {log.relative_to(ROOT)} ---", sys.stderr)
        emit("\n".join(lines), sys.stderr)
        emit("---", sys.stderr)
    emit(
        "stack: fix it and run `make up` again (running programs are kept); "
        "`make down` stops everything",
        sys.stderr,
    )
    sys.exit(1)


def start_supervisord() -> None:
    if len(SOCK.encode()) > 107:  # the limit of an AF_UNIX socket path
        fail(f"repo path too long for supervisord's socket {SOCK}: clone it to a shorter path")
    if supervisord_running():
        sync_config()
        return
    say("starting supervisord")
    # supervisord daemonizes itself once its socket is bound, so this returns quickly.
    result = subprocess.run([ROOT / ".venv/bin/supervisord", "-c", CONF])
    if result.returncode != 0 or not supervisord_running():
        fail("supervisord did not start", "supervisord")


def sync_config() -> None:
    """Pick up programs added to supervisord.conf while supervisord was running."""
    added, changed, removed = rpc().supervisor.reloadConfig()[0]
    for name in added:
        rpc().supervisor.addProcessGroup(name)
    if changed or removed:
        say(f"supervisord.conf changed for {changed + removed}: `make down && make up` applies it")


def state_of(name: str) -> str:
    return rpc().supervisor.getProcessInfo(name)["statename"]


def wait_healthy(prog: Program, ours: bool) -> None:
    started = time.monotonic()
    while not healthy(prog.probe):
        # Supervisor gives up on a program that keeps crashing at start: no point waiting.
        state = state_of(prog.name) if ours else "not ours"
        if ours and state in ("FATAL", "EXITED", "STOPPED"):
            fail(f"{prog.name} failed to start (supervisor state {state})", prog.name)
        if time.monotonic() - started > TIMEOUT:
            fail(f"{prog.name} not healthy after {TIMEOUT:.0f} s ({prog.probe})", prog.name)
        time.sleep(0.5)
    if time.monotonic() - started > 0.1:
        say(f"{prog.name} healthy (waited {time.monotonic() - started:.1f} s)")


def up() -> None:
    for folder in FOLDERS:
        folder.mkdir(parents=True, exist_ok=True)
    prepare_dagster_home()
    start_supervisord()
    ours: dict[str, bool] = {}  # program -> whether supervisord runs it (vs. someone else)
    for prog in PROGRAMS:
        state = state_of(prog.name)
        if state in ("RUNNING", "STARTING", "BACKOFF"):
            say(f"{prog.name} already {state.lower()}")
            ours[prog.name] = True
            continue
        if healthy(prog.probe):
            say(f"{prog.name}: something healthy already answers {prog.probe}; not starting ours")
            ours[prog.name] = False
            continue
        if port_taken(prog.probe):
            port = urlsplit(prog.probe).port
            fail(f"port {port} is taken by something that is not a healthy {prog.name}")
        for dep in prog.needs:
            wait_healthy(BY_NAME[dep], ours[dep])
        say(f"starting {prog.name}")
        rpc().supervisor.startProcess(prog.name, False)  # don't block: we poll the health
        ours[prog.name] = True
    for prog in PROGRAMS:
        wait_healthy(prog, ours[prog.name])
    say("all healthy")
    for prog in PROGRAMS:
        emit(f"  {prog.url}")


def down() -> None:
    if not supervisord_running():
        say("supervisord is not running; nothing to stop")
        return
    # One at a time, in reverse start order: the API goes before the broker it talks to.
    # (stopAllProcesses would signal them all at once.)
    for prog in reversed(PROGRAMS):
        if state_of(prog.name) in ("RUNNING", "STARTING", "BACKOFF"):
            say(f"stopping {prog.name}")
            rpc().supervisor.stopProcess(prog.name, True)
    rpc().supervisor.stopAllProcesses(True)  # whatever else the config runs
    pid = int(PIDFILE.read_text())
    rpc().supervisor.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            say("supervisord stopped")
            return
        time.sleep(0.2)
    fail(f"supervisord (pid {pid}) still runs 30 s after shutdown", "supervisord")


def status() -> None:
    running = supervisord_running()
    say(f"supervisord {'runs' if running else 'is not running'} ({CONF.relative_to(ROOT)})")
    for prog in PROGRAMS:
        health = "healthy" if healthy(prog.probe) else "not answering"
        line = f"  {prog.name:<17} {health:<14} {prog.probe:<34}"
        if running:
            info = rpc().supervisor.getProcessInfo(prog.name)
            line += f" supervisor: {info['statename']} {info['description']}"
        emit(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    {"up": up, "down": down, "status": status}[parser.parse_args().command]()


if __name__ == "__main__":
    main()
