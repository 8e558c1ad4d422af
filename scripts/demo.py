"""The README's main command: submit a fit to the running stack and show what became of it.

    make demo        (starts the stack first)

For now the platform ends at the queue: the demo shows the job and its message on
`training-jobs`, read through the management API without taking it off the queue.
"""

from __future__ import annotations

import json
import math
import sys
import time

import httpx
import numpy as np

API = "http://127.0.0.1:8030"
MANAGEMENT = "http://127.0.0.1:15672/api"


def training_data(n: int = 10_000) -> dict:
    """A week and a half of 5-minute vibration levels with a daily cycle and noise."""
    rng = np.random.default_rng()
    i = np.arange(n)
    values = 0.3 + 0.05 * np.sin(i / 288 * 2 * math.pi) + rng.normal(0, 0.01, n)
    start = int(time.time()) // 300 * 300 - 300 * n
    return {"timestamps": (start + 300 * i).tolist(), "values": values.tolist()}


def show(title: str, payload: object) -> None:
    print(f"\n== {title}")
    print(json.dumps(payload, indent=2)[:2000])


def main() -> int:
    series_id = f"demo_sensor_{int(time.time())}_radial"
    with httpx.Client(base_url=API, timeout=30) as api:
        r = api.post(
            f"/fit/{series_id}",
            json={
                "training_data": training_data(),
                "config": {"algorithm": "robust", "window_hours": 168},
                "metadata": {"triggered_by": "make demo", "description": "demo fit"},
            },
        )
        show(f"POST /fit/{series_id} -> {r.status_code}", r.json())
        if r.status_code != 202:
            return 1
        job = r.json()

        bad = api.post(
            f"/fit/{series_id}",
            json={"training_data": {"timestamps": [3, 2, 1], "values": [1, 2, 3]}},
        )
        show(f"an invalid fit -> {bad.status_code}", bad.json())

        show(f"GET {job['status_url']}", api.get(job["status_url"]).json())

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        peek = httpx.post(
            f"{MANAGEMENT}/queues/%2F/training-jobs/get",
            auth=("guest", "guest"),
            json={"count": 1000, "ackmode": "reject_requeue_true", "encoding": "auto"},
            timeout=10,
        )
        mine = [m for m in peek.json() if m["properties"].get("message_id") == job["job_id"]]
        if mine:
            message = mine[0]
            show(
                "its message on training-jobs",
                {"properties": message["properties"], "payload": json.loads(message["payload"])},
            )
            print("\nThe job waits on the queue; the training pipeline consumes it.")
            return 0
        time.sleep(0.5)
    print("the message did not reach training-jobs within 15 s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
