"""Load bench of serving: load_tests/locustfile.py run headless, in this process, against the
real stack.

Starts its own RabbitMQ node and MLflow server (bench/stack.py), registers `--series` models
the way the pipeline does, starts Ray Serve as `make up` runs it (HAProxy fast mode) with a
cache that holds every series and a warm-up that loads them (a fleet's replica serves its
whole working set from memory), then offers `--rps` requests per second of the `--profile`
workload for `--duration` seconds after a `--warmup`. `--no-model` more series have no model
on purpose (the locustfile's fallback checks).

Printed: a table per request name (requests, failures, error rate, p50/p95/p99 from the exact
latencies, achieved requests/s), the failure reasons, the load average, and as the last line
one JSON object. `target_met`: no failure and the offered rate achieved (within 0.5 %: a
request straddling the window's edge counts on one side only) for the whole window. The
stress profile runs the locustfile's StressShape instead and prints one row per stage.

    .venv/bin/python bench/load.py [--rps 200] [--duration 60] [--series 200]
        [--profile mixed|stress|anomaly] [--warmup 5] [--no-model 10] [--keep]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # Locust runs on gevent: patch before anything opens a socket or a thread

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stack import fast_mode_env, register_models, start_backends, stop_all  # noqa: E402
from tests.integration.services import RayServe  # noqa: E402

# Other than the tests' (5682, 8040, 5010, 8010 + offsets), the local stack's and
# bench/serving.py's (5722, 15722, 5030, 8100, its Ray ports).
AMQP_PORT, MGMT_PORT, MLFLOW_PORT, SERVE_PORT = 5732, 15732, 5040, 8120
FAST_PORTS = {
    "RAY_SERVE_HAPROXY_STATS_PORT": "8424",
    "RAY_SERVE_HAPROXY_METRICS_PORT": "9121",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "8520",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "9520",
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31200",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31299",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "41200",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "41299",
}
RATE_TOLERANCE = 0.005


# -- running Locust --------------------------------------------------------------------------


class Samples:
    """Every request's (start time, name, latency ms, failure), from Locust's request event:
    exact percentiles (Locust's own statistics round to buckets)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, float, str | None]] = []

    def on_request(self, name, response_time, exception, start_time=None, **_) -> None:
        started = start_time if start_time is not None else time.time() - response_time / 1000
        self.rows.append((started, name, response_time,
                          None if exception is None else str(exception)[:160]))

    def between(self, t0: float, t1: float) -> list[tuple[float, str, float, str | None]]:
        return [row for row in self.rows if t0 <= row[0] < t1]


def load_locustfile(profile: str):
    os.environ["LOAD_PROFILE"] = profile
    module = importlib.import_module("load_tests.locustfile")
    return importlib.reload(module)  # its profile is read at import


def run_locust(profile: str, host: str, rps: float, user_rps: float, warmup: float,
               duration: float) -> dict:
    """Run the profile; the samples of the measured window and its bounds."""
    from locust import events
    from locust.env import Environment

    locustfile = load_locustfile(profile)
    locustfile.catalog()  # fail here, once, on a bad series list
    locustfile.bodies()
    samples = Samples()
    events.request.add_listener(samples.on_request)
    shape = locustfile.StressShape() if profile == "stress" else None
    user = locustfile.AnomalyUser if profile == "anomaly" else locustfile.MixedUser
    users = max(1, math.ceil(rps / user_rps))
    # users × rate = the offered rate, exactly (the stress stages: users × user_rps)
    user.rate = user_rps if shape is not None else rps / users
    env = Environment(user_classes=[user], shape_class=shape, host=host, events=events,
                      stop_timeout=30)
    runner = env.create_local_runner()
    cpu0 = _cpu()
    if shape is not None:
        runner.start_shape()
        t0 = time.time()
        runner.shape_greenlet.join()
        t1 = time.time()
    else:
        runner.start(users, spawn_rate=users)
        gevent.sleep(warmup)
        t0 = time.time()
        gevent.sleep(duration)
        t1 = time.time()
    wall = t1 - t0
    runner.stop()  # users finish the request in flight (stop_timeout)
    runner.quit()
    events.request.remove_listener(samples.on_request)
    return {"rows": samples.between(t0, t1), "t0": t0, "t1": t1, "users": users,
            "client_cpu_cores": round((_cpu() - cpu0) / max(wall, 1e-9), 2),
            "stages": shape.stages() if shape is not None else None}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- figures ---------------------------------------------------------------------------------


def figures(rows: list, seconds: float) -> dict:
    latencies = np.asarray([r[2] for r in rows]) if rows else np.zeros(0)
    failures = sum(r[3] is not None for r in rows)
    out = {"requests": len(rows), "failures": failures,
           "error_rate": round(failures / len(rows), 5) if rows else 0.0,
           "rps": round(len(rows) / seconds, 1)}
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = round(float(np.percentile(latencies, q)), 2) if rows else None
    return out


def by_name(rows: list, seconds: float) -> dict[str, dict]:
    groups: dict[str, list] = defaultdict(list)
    for row in rows:
        groups[row[1]].append(row)
    return {name: figures(group, seconds) for name, group in sorted(groups.items())}


def stage_figures(rows: list, t0: float, stages: list, user_rps: float) -> list[dict]:
    out = []
    for start, end, users in stages:
        inside = [r for r in rows if start <= r[0] - t0 < end]
        out.append({"users": users, "offered_rps": round(users * user_rps, 1),
                    **figures(inside, end - start)})
    return out


def capacity(stages: list[dict]) -> float | None:
    """The highest achieved rate of a stage that kept up with no failure."""
    kept = [s["rps"] for s in stages
            if s["failures"] == 0 and s["rps"] >= (1 - 0.05) * s["offered_rps"]]
    return max(kept) if kept else None


COLUMNS = ("requests", "failures", "error_rate", "p50_ms", "p95_ms", "p99_ms", "rps")


def table(rows: dict[str, dict], first: str) -> str:
    lines = [f"{first:36s}" + "".join(f"{c:>11s}" for c in COLUMNS)]
    for name, fig in rows.items():
        lines.append(f"{name:36s}" + "".join(f"{_cell(fig[c]):>11s}" for c in COLUMNS))
    return "\n".join(lines)


def _cell(value) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def report(result: dict, endpoints: dict, reasons: Counter, stages: list | None) -> None:
    lines = [table(endpoints | {"total": result["total"]}, "request")]
    if stages:
        lines += ["", table({f"stage {i + 1}: {s['users']} users, {s['offered_rps']:g}/s": s
                             for i, s in enumerate(stages)}, "stress stage")]
    if reasons:
        lines += ["", "failures (request name: reason × count):"]
        lines += [f"  {name}: {why} × {n}" for (name, why), n in reasons.most_common(10)]
    offered = result["offered_rps"]
    offered = f"{offered:g} requests/s" if offered != "stepped" else "stepped load"
    lines += ["", f"profile {result['profile']}, offered {offered} by {result['users']} users "
              f"for {result['duration_s']:g} s; load average "
              f"{result['loadavg_start']} at start, {result['loadavg_end']} at end; client CPU "
              f"{result['client_cpu_cores']} cores (of {os.cpu_count()})"]
    print("\n".join(lines))
    print(json.dumps(result))


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=200.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before it")
    parser.add_argument("--series", type=int, default=200, help="series with a model")
    parser.add_argument("--no-model", type=int, default=10, help="series without one")
    parser.add_argument("--profile", choices=["mixed", "stress", "anomaly"], default="mixed")
    parser.add_argument("--user-rps", type=float, default=2, help="requests/s of one user")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adp-bench-load-"))
    haproxy = Path(tempfile.mkdtemp(prefix="hap-"))  # short: HAProxy's socket path limit
    series = [f"load_{i:04d}" for i in range(args.series)]
    no_model = [f"load_no_model_{i:03d}" for i in range(args.no_model)]
    series_file = work / "series.json"
    series_file.write_text(json.dumps({"series": series, "no_model": no_model}))
    os.environ["LOAD_SERIES_FILE"] = str(series_file)
    loadavg_start = round(os.getloadavg()[0], 2)
    services: list = []
    try:
        started = time.perf_counter()
        broker, mlflow = start_backends(work, AMQP_PORT, MGMT_PORT, MLFLOW_PORT)
        services += [broker, mlflow]
        register_s = register_models(mlflow.url, series)
        serve = RayServe(work / "serve", SERVE_PORT, {
            "STATE_DIR": str(work / "serve"), "MLFLOW_TRACKING_URI": mlflow.url,
            "RABBITMQ_URL": broker.url, "MLFLOW_DISABLE_TELEMETRY": "true",
            "LOG_LEVEL": "WARNING", "WARMUP_MODELS": str(args.series),
            "CACHE_CAPACITY": str(args.series + args.no_model + 16),
            **fast_mode_env(FAST_PORTS, haproxy)})
        services.append(serve)
        serve.start()  # ready once the warm-up loaded every series
        setup_s = time.perf_counter() - started
        run = run_locust(args.profile, serve.url, args.rps, args.user_rps, args.warmup,
                         args.duration)
    finally:
        stop_all(*reversed(services))
        if args.keep:
            sys.stderr.write(f"work folders kept: {work} {haproxy}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(haproxy, ignore_errors=True)

    rows, seconds = run["rows"], run["t1"] - run["t0"]
    total = figures(rows, seconds)
    endpoints = by_name(rows, seconds)
    reasons = Counter((r[1], r[3]) for r in rows if r[3] is not None)
    stages = (stage_figures(rows, run["t0"], run["stages"], args.user_rps)
              if run["stages"] else None)
    offered = args.rps if stages is None else None
    result = {
        "error_rate": total["error_rate"],
        "rps": total["rps"],
        "endpoints": {name: {k: fig[k] for k in ("p50_ms", "p95_ms", "p99_ms", "requests",
                                                 "failures", "rps")}
                      for name, fig in endpoints.items()},
        "target_met": (offered is not None and total["failures"] == 0
                       and total["requests"] > 0
                       and total["rps"] >= (1 - RATE_TOLERANCE) * offered),
        "profile": args.profile,
        "offered_rps": offered if offered is not None else "stepped",
        "duration_s": round(seconds, 1),
        "total": total,
        "users": run["users"] if stages is None else stages[-1]["users"],
        "series": args.series,
        "no_model_series": args.no_model,
        "client_cpu_cores": run["client_cpu_cores"],
        "register_s": round(register_s, 1),
        "setup_s": round(setup_s, 1),
        "loadavg_start": loadavg_start,
        "loadavg_end": round(os.getloadavg()[0], 2),
    }
    if stages:
        result["stages"] = stages
        result["capacity_rps"] = capacity(stages)
    report(result, endpoints, reasons, stages)


if __name__ == "__main__":
    main()
