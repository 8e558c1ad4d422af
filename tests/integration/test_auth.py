"""Authentication and roles in the real processes: a training API (uvicorn) verifying tokens
against a JWKS served over HTTP, and a Ray Serve (`serve run`) verifying them with a static
public key file. Both are started here, on their own ports, with AUTH_ENABLED=true; the
session's API and Serve keep authentication off for the other tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import make_series
from tests.identity import AUDIENCE, ISSUER, IdentityProvider, other_key
from tests.integration.services import RayServe, TrainingApi

_OFFSET = int(os.environ.get("ADP_TEST_PORT_OFFSET", "0"))
AUTH_API_PORT, AUTH_SERVE_PORT = 8045 + _OFFSET, 8015 + _OFFSET

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


def _auth_env(**source: str) -> dict[str, str]:
    return {"AUTH_ENABLED": "true", "AUTH_ISSUER": ISSUER, "AUTH_AUDIENCE": AUDIENCE,
            "AUTH_ROLES_CLAIM": "roles", **source}


@pytest.fixture(scope="module")
def auth_api(idp, rabbitmq, tmp_path_factory) -> Iterator[TrainingApi]:
    with idp.serve_jwks() as jwks_url:
        service = TrainingApi(tmp_path_factory.mktemp("auth_api"), AUTH_API_PORT, {
            "RABBITMQ_URL": rabbitmq.url, **_auth_env(AUTH_JWKS_URL=jwks_url)})
        service.start()
        try:
            yield service
        finally:
            service.stop()


@pytest.fixture(scope="module")
def auth_serve(idp, rabbitmq, mlflow_server, tmp_path_factory) -> Iterator[RayServe]:
    base = tmp_path_factory.mktemp("auth_serve")
    key = base / "issuer.pem"
    key.write_text(idp.public_pem())
    server = RayServe(base, AUTH_SERVE_PORT, {
        "STATE_DIR": str(base), "RABBITMQ_URL": rabbitmq.url,
        "MLFLOW_TRACKING_URI": mlflow_server.url, "WARMUP_MODELS": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true", **_auth_env(AUTH_PUBLIC_KEY=str(key))})
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_refused(r: httpx.Response, status: int, code: str, case: str = "") -> None:
    assert r.status_code == status, (case, r.text)
    body = r.json()
    assert body["status"] == "error" and body["error"]["code"] == code and body["error"]["message"]
    assert body["metadata"]["request_id"] == r.headers["x-request-id"]
    assert r.headers["www-authenticate"].startswith("Bearer")


def _bad_tokens(idp: IdentityProvider, roles: list[str]) -> dict[str, dict[str, str]]:
    return {
        "missing": {},
        "expired": _bearer(idp.token(roles, expires_in=-600)),
        "wrong audience": _bearer(idp.token(roles, audience="someone-else")),
        "wrong issuer": _bearer(idp.token(roles, issuer="https://elsewhere.test/")),
        "wrong signature": _bearer(idp.token(roles, signing_key=other_key())),
    }


def test_training_api_refuses_bad_tokens_and_missing_roles(auth_api, idp):
    with httpx.Client(base_url=auth_api.base_url, timeout=30) as http:
        body = {"training_data": make_series(seed=3)}
        for case, headers in _bad_tokens(idp, ["data_scientist"]).items():
            r = http.post("/fit/auth_series", json=body, headers=headers)
            _assert_refused(r, 401, "UNAUTHENTICATED", case)
        for roles in (["viewer"], ["ml_engineer"], []):
            r = http.post("/fit/auth_series", json=body, headers=_bearer(idp.token(roles)))
            _assert_refused(r, 403, "FORBIDDEN")
        assert http.get("/jobs", headers=_bearer(idp.token(["viewer"]))).status_code == 403

        scientist = _bearer(idp.token(["data_scientist"], sub="dana"))
        accepted = http.post("/fit/auth_series", json=body, headers=scientist)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()["job_id"]
        assert http.get(f"/jobs/{job}", headers=scientist).status_code == 200
        admin = _bearer(idp.token(["admin"]))
        assert http.get("/jobs", headers=admin).json()["total"] == 1

        # Promotion (issue 7's route): a data scientist may not; an ML engineer passes the
        # roles check and reaches the router (404 until the route exists, never 403).
        promote = "/models/auth_series/versions/1/promote"
        _assert_refused(http.post(promote, headers=scientist), 403, "FORBIDDEN")
        engineer = http.post(promote, headers=_bearer(idp.token(["ml_engineer"])))
        assert engineer.status_code != 403 and engineer.status_code != 401

        for path in ("/health", "/readiness", "/liveness", "/metrics", "/openapi.json", "/docs"):
            assert http.get(path).status_code == 200, path
    log = auth_api.log_path.read_text()
    assert "request refused" in log and "Traceback" not in log


def test_serving_refuses_bad_tokens_and_missing_roles(auth_serve, idp):
    batch = {"timestamps": [1, 2, 3, 4], "values": [0.1, 0.2, 0.1, 9.0]}
    with httpx.Client(base_url=auth_serve.url, timeout=30) as http:
        for case, headers in _bad_tokens(idp, ["viewer"]).items():
            r = http.post("/predict/auth_series/batch", json=batch, headers=headers)
            _assert_refused(r, 401, "UNAUTHENTICATED", case)
        for roles in (["data_scientist"], ["ml_engineer"]):
            r = http.post("/predict/auth_series/batch", json=batch,
                          headers=_bearer(idp.token(roles)))
            _assert_refused(r, 403, "FORBIDDEN")
        for roles in (["viewer"], ["admin"]):
            ok = http.post("/predict/auth_series/batch", json=batch,
                           headers=_bearer(idp.token(roles)))
            assert ok.status_code == 200, ok.text
            assert ok.json()["model"]["source"] == "baseline"  # no model: scored on itself
        for path in ("/health", "/readiness", "/liveness", "/metrics", "/openapi.json"):
            assert http.get(path).status_code == 200, path
    log = auth_serve.log_path.read_text()
    assert "request refused" in log and "Traceback" not in log
