"""Benchmark of POST /fit against a real job store and a real RabbitMQ.

Starts a private RabbitMQ node and the training API (one uvicorn worker), then measures:
- latency p50/p99 of sequential fits of 10,000 and 100,000 points;
- the sustained rate of 10,000-point fits at concurrency 8;
- as the in-run baseline, the latency of GET /liveness on the same server, so the cost
  of a fit shows as a ratio to the cheapest request.
Every fit carries distinct data for a distinct series (no deduplication, no rate limit).
The last line is one JSON object.

    .venv/bin/python bench/fit_api.py [--sequential 60] [--sustained 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.services import RabbitMQ, TrainingApi  # noqa: E402

AMQP_PORT, MGMT_PORT, API_PORT = 5692, 15692, 8050


def bodies(points: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(points)
    timestamps = np.arange(1_733_000_000, 1_733_000_000 + 300 * points, 300)
    values = 0.3 + 0.05 * rng.standard_normal(points)
    out = []
    for i in range(count):
        values[0] = float(i)  # distinct data, so no fit is deduplicated
        out.append(
            orjson.dumps(
                {"training_data": {"timestamps": timestamps, "values": values}},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        )
    return out


def percentile(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(samples) * 1000, q)), 2)


async def sequential(client: httpx.AsyncClient, payloads: list[bytes], tag: str) -> list[float]:
    latencies = []
    for i, payload in enumerate(payloads):
        start = time.perf_counter()
        r = await client.post(
            f"/fit/bench_{tag}_{i}", content=payload, headers={"content-type": "application/json"}
        )
        latencies.append(time.perf_counter() - start)
        if r.status_code != 202:
            raise RuntimeError(f"fit answered {r.status_code}: {r.text[:300]}")
    return latencies


async def sustained(client: httpx.AsyncClient, payloads: list[bytes], concurrency: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(payloads)):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            r = await client.post(
                f"/fit/bench_rate_{i}",
                content=payloads[i],
                headers={"content-type": "application/json"},
            )
            if r.status_code != 202:
                raise RuntimeError(f"fit answered {r.status_code}: {r.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(payloads) / (time.perf_counter() - start)


async def measure(base_url: str, n_seq: int, n_rate: int) -> dict:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        warm = await sequential(client, bodies(10_000, 5)[:5], "warm")  # noqa: F841
        liveness = []
        for _ in range(200):
            start = time.perf_counter()
            await client.get("/liveness")
            liveness.append(time.perf_counter() - start)
        lat_10k = await sequential(client, bodies(10_000, n_seq), "s10k")
        lat_100k = await sequential(client, bodies(100_000, max(n_seq // 2, 10)), "s100k")
        rate = await sustained(client, bodies(10_000, n_rate), concurrency=8)
    return {
        "baseline_liveness_p50_ms": percentile(liveness, 50),
        "fit_10k_p50_ms": percentile(lat_10k, 50),
        "fit_10k_p99_ms": percentile(lat_10k, 99),
        "fit_100k_p50_ms": percentile(lat_100k, 50),
        "fit_100k_p99_ms": percentile(lat_100k, 99),
        "fit_100k_p50_over_liveness": round(percentile(lat_100k, 50) / percentile(liveness, 50), 1),
        "fits_per_s": round(rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=60, help="fits per latency series")
    parser.add_argument("--sustained", type=int, default=600, help="fits in the rate run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adp-bench-"))
    work.chmod(0o755)  # the RabbitMQ node runs as its own user
    broker = RabbitMQ(work / "rabbitmq", AMQP_PORT, MGMT_PORT)
    api = TrainingApi(work / "api", API_PORT, {"RABBITMQ_URL": broker.url, "LOG_LEVEL": "WARNING"})
    (work / "api").mkdir()
    try:
        broker.start()
        api.start()
        result = asyncio.run(measure(api.base_url, args.sequential, args.sustained))
        backlog = httpx.get(f"{api.base_url}/health").json()["outbox_backlog"]
        result["outbox_backlog_at_end"] = backlog
    finally:
        api.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    for key, value in result.items():
        print(f"{key:32s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
