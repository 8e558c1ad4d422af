"""The broker topology is declared exactly as the design names it."""

from __future__ import annotations

import json
import time

import httpx

from core import topology
from tests.conftest import make_series


def management(rabbitmq, path: str):
    r = httpx.get(
        f"http://127.0.0.1:{rabbitmq.mgmt_port}/api/{path}", auth=("guest", "guest"), timeout=10
    )
    r.raise_for_status()
    return r.json()


def test_exchanges_queues_and_bindings(api, rabbitmq):
    events = management(rabbitmq, "exchanges/%2F/training-events")
    assert (events["type"], events["durable"]) == ("topic", True)
    dlx = management(rabbitmq, "exchanges/%2F/training-dlx")
    assert (dlx["type"], dlx["durable"]) == ("direct", True)

    for name in ("training-jobs", "training-priority-high"):
        queue = management(rabbitmq, f"queues/%2F/{name}")
        assert queue["durable"] and not queue["auto_delete"]
        assert queue["arguments"] == {
            "x-dead-letter-exchange": "training-dlx",
            "x-dead-letter-routing-key": "training-jobs-dlq",
        }
    assert management(rabbitmq, "queues/%2F/training-jobs-dlq")["durable"]

    bindings = {
        (b["source"], b["destination"], b["routing_key"])
        for b in management(rabbitmq, "bindings/%2F")
        if b["source"]
    }
    assert {
        ("training-events", "training-jobs", "training.job.standard"),
        ("training-events", "training-priority-high", "training.job.priority"),
        ("training-dlx", "training-jobs-dlq", "training-jobs-dlq"),
    } <= bindings
    assert topology.JOB_QUEUE_ARGUMENTS["x-dead-letter-exchange"] == "training-dlx"


def test_json_logs_carry_the_request_id(client, api, series_id):
    rid = "5f1d2c3b-4a59-4687-9a1b-0c2d3e4f5a6b"
    r = client.post(
        f"/fit/{series_id}", json={"training_data": make_series()}, headers={"X-Request-ID": rid}
    )
    assert r.status_code == 202
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            json.loads(line)
            for line in api.log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        accepted = [
            x
            for x in lines
            if x.get("message") == "fit accepted" and x.get("series_id") == series_id
        ]
        if accepted:
            assert accepted[0]["request_id"] == rid
            assert accepted[0]["job_id"] == r.json()["job_id"]
            return
        time.sleep(0.1)
    raise AssertionError("no JSON log line for the accepted fit")
