"""The fit endpoint over HTTP: validation codes, limits, idempotency, cancel, observability."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_series


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert body["status"] == "error"
    assert body["metadata"]["request_id"] == r.headers["x-request-id"]
    return body["error"]


def with_data(timestamps, values, **extra) -> dict:
    return {"training_data": {"timestamps": timestamps, "values": values}, **extra}


def _rules() -> list:
    good = make_series(seed=1)
    ts, vs = good["timestamps"], good["values"]
    swapped = ts.copy()
    swapped[100], swapped[101] = swapped[101], swapped[100]
    dup = ts.copy()
    dup[50] = dup[49]
    return [
        ("few points", with_data(ts[:9999], vs[:9999]), 422, "INSUFFICIENT_DATA", "9999 points"),
        (
            "many points",
            with_data(list(range(1, 100_002)), [float(i % 5) for i in range(100_001)]),
            422,
            "TOO_MANY_POINTS",
            "100001",
        ),
        ("lengths", with_data(ts, vs[:-1]), 422, "INVALID_INPUT", "same length"),
        ("order", with_data(swapped, vs), 422, "INVALID_TIMESTAMP", "timestamps[101]"),
        ("duplicate", with_data(dup, vs), 422, "INVALID_TIMESTAMP", "timestamps[50]"),
        ("negative", with_data([-1, *ts[1:]], vs), 422, "INVALID_TIMESTAMP", "positive"),
        ("float ts", with_data([t + 0.5 for t in ts], vs), 422, "INVALID_TIMESTAMP", "integer"),
        ("constant", with_data(ts, [1.0] * len(ts)), 422, "CONSTANT_SERIES", "constant"),
        (
            "algorithm",
            with_data(ts, vs, config={"algorithm": "prophet"}),
            422,
            "INVALID_INPUT",
            "config",
        ),
        ("window", with_data(ts, vs, config={"window_hours": 200}), 422, "INVALID_INPUT", "config"),
        (
            "priority",
            with_data(ts, vs, metadata={"priority": "urgent"}),
            422,
            "INVALID_INPUT",
            "metadata",
        ),
    ]


@pytest.mark.parametrize(
    ("case", "body", "status", "code", "says"), _rules(), ids=[r[0] for r in _rules()]
)
def test_each_validation_rule_has_its_code(client, series_id, case, body, status, code, says):
    r = client.post(f"/fit/{series_id}", json=body)
    assert r.status_code == status, r.text
    error = error_of(r)
    assert error["code"] == code
    assert says in error["message"] or says in json.dumps(error["details"])


def test_non_finite_values_from_python_json(client, series_id):
    good = make_series(seed=2)
    good["values"][17] = float("inf")
    r = client.post(
        f"/fit/{series_id}",
        content=json.dumps({"training_data": good}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert error_of(r)["code"] == "NON_FINITE_VALUE"
    assert "values[17]" in error_of(r)["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 422),
        (b"a=1", "application/x-www-form-urlencoded", 415),
        (b"{}", None, 415),
    ],
)
def test_malformed_bodies(client, series_id, body, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(f"/fit/{series_id}", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert error_of(r)["code"] in {"INVALID_INPUT", "UNSUPPORTED_MEDIA_TYPE"}


def raw_post(port: int, path: str, body: bytes = b"") -> tuple[int, dict]:
    """POST with the path exactly as given: HTTP clients normalise dot segments away.

    The body is empty: the series id is refused before the body is read, and unread bytes
    would make the server reset the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload) if payload else {}


@pytest.mark.parametrize(
    "raw_path",
    [
        "/fit/..",
        "/fit/%2E%2E",
        "/fit/a%2Fb",
        "/fit/a/../b",
        "/fit/..%2Fetc",
        "/fit/with%20space",
        "/fit/" + "a" * 65,
        "/fit/sens%C3%B6r",
        "/fit/a%00b",
        "/fit/a.b",
        "/fit/%252e%252e",
    ],
)
def test_invalid_series_ids_touch_no_file_and_no_queue(client, api, state_dir, raw_path):
    jobs_before = client.get("/jobs").json()["total"]
    data = state_dir / "data"
    data_before = sorted(data.rglob("*")) if data.exists() else []
    status, body = raw_post(api.port, raw_path)
    assert status in (404, 422), body
    if status == 422:
        assert body["error"]["code"] == "INVALID_SERIES_ID"
    assert client.get("/jobs").json()["total"] == jobs_before
    assert (sorted(data.rglob("*")) if data.exists() else []) == data_before


def test_rate_limit_per_series(client, series_id, state_dir):
    for i in range(5):
        r = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=100 + i)})
        assert r.status_code == 202, r.text
    r = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=200)})
    assert r.status_code == 429
    assert error_of(r)["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # The refused fit stored nothing.
    assert len(list((Path(state_dir) / "data" / series_id).glob("*.parquet"))) == 5
    # Other series are not affected.
    other = client.post(f"/fit/{series_id}_b", json={"training_data": make_series(seed=201)})
    assert other.status_code == 202


def test_body_over_10_mb_is_refused_by_its_announced_size(client, series_id):
    big = b"x" * (10 * 1024 * 1024 + 1)
    r = client.post(f"/fit/{series_id}", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    error = error_of(r)
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"][0]["limit_bytes"] == 10 * 1024 * 1024


def test_streamed_body_over_10_mb_is_cut_off(client, series_id):
    def chunks():
        for _ in range(12):
            yield b" " * (1024 * 1024)

    r = client.post(
        f"/fit/{series_id}", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert error_of(r)["code"] == "PAYLOAD_TOO_LARGE"


def test_same_data_while_queued_returns_the_same_job(client, series_id):
    body = {"training_data": make_series(seed=7)}
    first = client.post(f"/fit/{series_id}", json=body).json()
    again = client.post(f"/fit/{series_id}", json=body)
    assert again.status_code == 202
    assert again.json()["job_id"] == first["job_id"] and again.json()["deduplicated"]
    other = client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=8)})
    assert other.json()["job_id"] != first["job_id"]
    assert client.get("/jobs", params={"series_id": series_id}).json()["total"] == 2


def test_idempotency_key(client, series_id):
    headers = {"Idempotency-Key": f"key-{series_id}"}
    body = {"training_data": make_series(seed=9)}
    first = client.post(f"/fit/{series_id}", json=body, headers=headers).json()
    client.delete(f"/jobs/{first['job_id']}")  # no longer active: only the key matches
    replay = client.post(f"/fit/{series_id}", json=body, headers=headers)
    assert replay.json()["job_id"] == first["job_id"] and replay.json()["deduplicated"]
    assert replay.json()["status"] == "cancelled"
    reused = client.post(
        f"/fit/{series_id}", json={"training_data": make_series(seed=10)}, headers=headers
    )
    assert reused.status_code == 409
    assert error_of(reused)["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_cancel_while_queued_only(client, series_id):
    job_id = client.post(f"/fit/{series_id}", json={"training_data": make_series()}).json()[
        "job_id"
    ]
    data_file = Path(client.get(f"/jobs/{job_id}").json()["data_uri"].removeprefix("file://"))
    assert data_file.exists()
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert not data_file.exists()  # no later training window sees cancelled data
    assert r.json()["finished_at"] is not None
    again = client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and error_of(again)["code"] == "JOB_NOT_CANCELLABLE"
    missing = client.delete("/jobs/6d1f3b2e-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and error_of(missing)["code"] == "JOB_NOT_FOUND"
    assert error_of(client.get("/jobs/not-a-uuid"))["code"] == "JOB_NOT_FOUND"


def test_job_listing_filters_and_pages(client, series_id):
    ids = [
        client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=s)}).json()[
            "job_id"
        ]
        for s in (20, 21, 22)
    ]
    client.delete(f"/jobs/{ids[0]}")
    page = client.get("/jobs", params={"series_id": series_id, "page_size": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    second = client.get("/jobs", params={"series_id": series_id, "page_size": 2, "page": 2}).json()
    assert {j["job_id"] for j in page["items"] + second["items"]} == set(ids)
    cancelled = client.get("/jobs", params={"series_id": series_id, "status": "cancelled"}).json()
    assert [j["job_id"] for j in cancelled["items"]] == [ids[0]]
    bad = client.get("/jobs", params={"series_id": "../x"})
    assert error_of(bad)["code"] == "INVALID_SERIES_ID"
    assert error_of(client.get("/jobs", params={"status": "nope"}))["code"] == "INVALID_INPUT"


def test_request_id_is_echoed_or_generated(client):
    rid = "0b0a9b9c-5d6e-4f70-8a1b-2c3d4e5f6a7b"
    assert client.get("/health", headers={"X-Request-ID": rid}).headers["x-request-id"] == rid
    assert len(client.get("/health").headers["x-request-id"]) >= 32


def test_metrics_count_fits_by_outcome(client, series_id):
    client.post(f"/fit/{series_id}", json={"training_data": make_series(seed=30)})
    client.post(f"/fit/{series_id}", json=with_data([1, 2], [1.0, 2.0]))
    text = client.get("/metrics").text
    assert "fits_accepted_total" in text
    assert 'fits_rejected_total{code="INSUFFICIENT_DATA"}' in text
    assert "outbox_backlog" in text
    assert 'http_request_duration_seconds_bucket{handler="/fit/{series_id:path}"' in text


def test_health_probes_and_docs(client):
    health = client.get("/health").json()
    assert health["job_store"] and health["broker"] and health["status"] == "ok"
    assert client.get("/readiness").status_code == 200
    assert client.get("/liveness").json() == {"status": "alive"}
    spec = client.get("/openapi.json").json()
    fit_body = spec["paths"]["/fit/{series_id}"]["post"]["requestBody"]
    assert fit_body["content"]["application/json"]["schema"]["$ref"].endswith("/FitRequest")
    assert "FitRequest" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
