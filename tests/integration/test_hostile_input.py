"""Hostile input against the real training API (uvicorn) and serving (Ray Serve): extreme
numbers, deep nesting, repeated keys, wrong content types, truncated, huge and slow bodies,
series_id path tricks. Every answer is a stable 4xx with the error body; nothing is named
after a bad series id; the logs show no unhandled exception."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_series

pytestmark = pytest.mark.integration

DEEP = [b"[" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"training_data": {"timestamps": ' + b"[" * 3_000 + b"]" * 3_000 + b"}}"]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def log_marks(api, serve) -> dict[Path, int]:
    return {p: p.stat().st_size for p in (api.log_path, serve.log_path)}


@pytest.fixture
def http_api(api, log_marks):
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def http_serve(serve, log_marks):
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        yield client


def refused(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error" and body["error"]["code"] == code, body
    assert body["metadata"]["request_id"] == r.headers["x-request-id"]
    return body["error"]


def exchange(port: int, head: str, parts: list[bytes] = (), pause: float = 0.0,
             timeout: float = 30) -> tuple[int | None, dict, float]:
    """Send a request as given (path unnormalised, body in parts with pauses), stop sending
    once the server answers; return status, JSON body and seconds until the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in parts:
            if select.select([sock], [], [], pause)[0]:
                break  # the server has answered (or closed): stop trickling
            try:
                sock.sendall(part)
            except OSError:
                break
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
            if b"\r\n\r\n" in response and _complete(response):
                break
    head_part, _, payload = response.partition(b"\r\n\r\n")
    status = int(head_part.split()[1]) if head_part else None
    return status, json.loads(payload) if payload.strip() else {}, time.monotonic() - started


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


# -- numbers -------------------------------------------------------------------------------

def _fit_body(timestamps: list | None = None, values: list | None = None) -> bytes:
    series = make_series(seed=5)
    if timestamps is not None:
        series["timestamps"][: len(timestamps)] = timestamps
    if values is not None:
        series["values"][: len(values)] = values
    return json.dumps({"training_data": series}).encode()


@pytest.mark.parametrize(("timestamps", "values", "status", "code"), [
    (None, [1e308], 422, "NON_FINITE_VALUE"),  # finite, but no statistics survive it
    (None, [-1e308, 1e308], 422, "NON_FINITE_VALUE"),
    (None, [float("inf")], 422, "NON_FINITE_VALUE"),  # Python's json writes Infinity
    (None, [-0.0, 5e-324], 202, None),
    ([2**63], None, 422, "INVALID_TIMESTAMP"),  # beyond int64
    ([2**64], None, 422, "INVALID_TIMESTAMP"),
    ([10**30], None, 422, "INVALID_TIMESTAMP"),
    ([-(2**63)], None, 422, "INVALID_TIMESTAMP"),
    ([1.5], None, 422, "INVALID_TIMESTAMP"),
])
def test_extreme_numbers_in_a_fit(http_api, series_id, timestamps, values, status, code):
    r = http_api.post(f"/fit/{series_id}", content=_fit_body(timestamps, values),
                      headers=JSON)
    assert r.status_code == status, r.text
    if code is not None:
        refused(r, status, code)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"timestamps": [1, 2, 3, 4], "values": [1e308, -1e308, -0.0, 5e-324]}, 200, None),
    ({"timestamps": [2**63], "values": [1.0]}, 422, "INVALID_TIMESTAMP"),
    ({"timestamps": [10**30], "values": [1.0]}, 422, "INVALID_TIMESTAMP"),
    ({"timestamps": [1], "values": [float("inf")]}, 422, "NON_FINITE_VALUE"),
    ({"data": [{"timestamp": -1, "value": 1.0}]}, 422, "INVALID_TIMESTAMP"),
])
def test_extreme_numbers_in_a_batch(http_serve, series_id, body, status, code):
    r = http_serve.post(f"/predict/{series_id}/batch", content=json.dumps(body),
                        headers=JSON)
    assert r.status_code == status, r.text
    if code is None:
        assert r.json()["summary"]["points"] == 4
    else:
        refused(r, status, code)


# -- structure -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", DEEP, ids=["arrays", "objects", "in_training_data"])
def test_deep_nesting_is_400(http_api, http_serve, series_id, raw):
    refused(http_api.post(f"/fit/{series_id}", content=raw, headers=JSON), 400, "INVALID_INPUT")
    refused(http_serve.post(f"/predict/{series_id}/batch", content=raw, headers=JSON),
            400, "INVALID_INPUT")


def test_repeated_keys(http_api, http_serve, series_id):
    series = json.dumps(make_series(seed=6))
    for raw in (
        f'{{"training_data": {series}, "training_data": {series}}}',
        '{"training_data": ' + series.replace('"values"', '"timestamps": [1], "values"') + "}",
        f'{{"training_data": {series}, "config": {{"algorithm": "robust", "algorithm": "x"}}}}',
    ):
        error = refused(http_api.post(f"/fit/{series_id}", content=raw, headers=JSON),
                        422, "INVALID_INPUT")
        assert "repeated keys" in error["message"]
    # Predictions read JSON like orjson and the standard library: the last value counts.
    r = http_serve.post(f"/predict/{series_id}/batch", headers=JSON,
                        content='{"timestamps": [1, 2], "values": [0, 0], "values": [1.5, 2.5]}')
    assert r.status_code == 200 and r.json()["results"]["values"] == [1.5, 2.5]


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/jsonx",
])
def test_wrong_content_types_are_415(http_api, http_serve, series_id, content_type):
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"timestamps": [1], "values": [1.0]})
    refused(http_api.post(f"/fit/{series_id}", content=body, headers=headers),
            415, "UNSUPPORTED_MEDIA_TYPE")
    refused(http_serve.post(f"/predict/{series_id}/batch", content=body, headers=headers),
            415, "UNSUPPORTED_MEDIA_TYPE")


# -- truncated, huge and slow bodies -----------------------------------------------------------

def _post_head(path: str, length: int) -> str:
    return (f"POST {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
            f"Content-Length: {length}\n")


def test_truncated_bodies(api, serve, http_api, series_id):
    whole = _fit_body()
    cut = whole[: len(whole) // 2]
    refused(http_api.post(f"/fit/{series_id}", content=cut, headers=JSON), 400, "INVALID_INPUT")
    for port, path in ((api.port, f"/fit/{series_id}"), (serve.port, "/predict/x/batch")):
        # Announces the whole body, sends half, then closes: nobody is left to answer.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_post_head(path, len(whole)).replace("\n", "\r\n").encode() + b"\r\n"
                         + cut)
    time.sleep(1)
    assert http_api.get(f"/jobs?series_id={series_id}").json()["total"] == 0


def test_bodies_over_the_limit_are_413(http_serve, serve, series_id):
    too_big = b"x" * (4 * 1024 * 1024 + 1)
    error = refused(http_serve.post(f"/predict/{series_id}/batch", content=too_big,
                                    headers=JSON),
                    413, "PAYLOAD_TOO_LARGE")
    assert error["details"][0]["limit_bytes"] == 4 * 1024 * 1024
    streamed = (b" " * 1024 * 1024 for _ in range(11))  # 11 MB, chunked: no length announced
    refused(http_serve.post(f"/predict/{series_id}/batch", content=streamed,
                            headers=JSON),
            413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("service", ["api", "serve"])
def test_slow_bodies_are_cut_off(request, log_marks, series_id, service):
    """A byte every 0.3 s for a 200-byte body: the 5 s deadline answers 408 long before."""
    port = request.getfixturevalue(service).port
    path = f"/fit/{series_id}" if service == "api" else f"/predict/{series_id}/batch"
    status, body, seconds = exchange(port, _post_head(path, 200), [b" "] * 200, pause=0.3)
    assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT", body
    assert 4.5 <= seconds < 15


# -- series_id path tricks ---------------------------------------------------------------------

TRICKS = ["..", "%2E%2E", "a%2Fb", "a%2Fbatch", "..%2F..%2Fetc", "with%20space", "a" * 65,
          "sens%C3%B6r", "a%00b", "a%0Ab", "a.b", "%252e%252e", "%E2%80%AE", "model_od_%2A"]


@pytest.mark.parametrize("trick", TRICKS)
def test_series_id_tricks_on_every_route(api, serve, http_api, trick):
    models = Path(serve.env["STATE_DIR"]) / "models"
    before = sorted(models.rglob("*")) if models.exists() else []
    point = '{"timestamp": 1, "value": 1.0}'
    batch = '{"timestamps": [1], "values": [1.0]}'
    for port, path, body in ((api.port, f"/fit/{trick}", "{}"),
                             (serve.port, f"/predict/{trick}", point),
                             (serve.port, f"/predict/{trick}/batch", batch)):
        status, answer, _ = exchange(port, _post_head(path, len(body)), [body.encode()])
        assert status in (404, 422), (path, status, answer)
        if status == 422:
            assert answer["error"]["code"] == "INVALID_SERIES_ID", (path, answer)
    r = http_api.get(f"/jobs?series_id={trick}")
    refused(r, 422, "INVALID_SERIES_ID")
    assert (sorted(models.rglob("*")) if models.exists() else []) == before


def test_serving_answers_one_request_id(http_serve):
    for sent in ("not-a-uuid", "3f0c2a4e-1111-4222-8333-444455556666"):
        r = http_serve.post("/predict/a%2Fb", headers={"X-Request-ID": sent})
        assert r.headers.get_list("x-request-id") == [sent]
        assert r.json()["metadata"]["request_id"] == sent


def test_no_unhandled_exception_in_the_logs(log_marks):
    """Last in this module: every request above was answered by the error table."""
    for path, offset in log_marks.items():
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        bad = [line for line in lines if "Traceback" in line or '"level": "ERROR"' in line]
        assert not bad, "\n".join(bad[:20])
