"""AuthMiddleware with real signed tokens, on a small app built like the two services
(static key and JWKS; the real processes are tested in tests/integration/test_auth.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import jwt
import pytest
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.auth import AuthMiddleware, current_actor
from core.http import UnhandledErrors, install_error_handlers
from core.settings import Settings
from tests.identity import AUDIENCE, ISSUER, IdentityProvider, other_key


def _app(settings: Settings) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware, settings=lambda: settings)
    app.add_middleware(UnhandledErrors)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")

    @app.post("/predict/{series_id}")
    async def predict(series_id: str, request: Request) -> dict:
        return {"series_id": series_id, "actor": current_actor(request)}

    @app.get("/jobs")
    async def jobs(request: Request) -> dict:
        return {"actor": current_actor(request)}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def _settings(**auth: str) -> Settings:
    return Settings(**{"auth_enabled": True, "auth_issuer": ISSUER, "auth_audience": AUDIENCE,
                       **auth})


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture(scope="module", params=["static_key", "jwks"])
def client(request: pytest.FixtureRequest, idp: IdentityProvider) -> Iterator[TestClient]:
    if request.param == "static_key":
        yield TestClient(_app(_settings(auth_public_key=idp.public_pem())))
        return
    with idp.serve_jwks() as url:
        yield TestClient(_app(_settings(auth_jwks_url=url)))


def _hmac_token(secret: bytes) -> str:
    """The classic confusion: the public key used as an HMAC secret (PyJWT refuses to sign
    it, so it is forged by hand)."""
    def part(doc: dict) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=")

    head = part({"alg": "HS256", "typ": "JWT", "kid": "test-key-1"}) + b"." + part(
        {"sub": "x", "roles": ["admin"], "iss": ISSUER, "aud": AUDIENCE, "exp": 2**31})
    mac = hmac.new(secret, head, hashlib.sha256).digest()
    return (head + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code
    assert body["metadata"]["request_id"] == response.headers["X-Request-ID"]
    return body


def test_the_right_role_passes_and_the_subject_is_the_actor(client, idp) -> None:
    r = client.post("/predict/s1", headers=_bearer(idp.token(["viewer"], sub="alice")))
    assert r.status_code == 200 and r.json() == {"series_id": "s1", "actor": "alice"}
    r = client.get("/jobs", headers=_bearer(idp.token(["admin"], sub="root")))
    assert r.status_code == 200 and r.json() == {"actor": "root"}


@pytest.mark.parametrize("case", [
    "missing", "not_bearer", "garbage", "expired", "wrong_audience", "wrong_issuer",
    "wrong_signature", "no_subject", "alg_none", "hs256_with_public_key",
])
def test_a_bad_token_is_401_with_the_error_body(client, idp, case: str) -> None:
    pem = idp.public_pem().encode()
    headers = {
        "missing": {},
        "not_bearer": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "garbage": _bearer("not.a.jwt"),
        "expired": _bearer(idp.token(expires_in=-3600)),
        "wrong_audience": _bearer(idp.token(audience="another-api")),
        "wrong_issuer": _bearer(idp.token(issuer="https://evil.test/")),
        "wrong_signature": _bearer(idp.token(signing_key=other_key())),
        "no_subject": _bearer(idp.token(sub=None)),
        "alg_none": _bearer(jwt.encode({"sub": "x", "roles": ["admin"]}, None, algorithm="none")),
        "hs256_with_public_key": _bearer(_hmac_token(pem)),
    }[case]
    r = client.post("/predict/s1", headers=headers)
    body = _refused(r, 401, "UNAUTHENTICATED")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["message"]


def test_expiry_audience_and_signature_say_what_is_wrong(client, idp) -> None:
    messages = {
        "expired": idp.token(expires_in=-3600),
        "audience": idp.token(audience="another-api"),
        "signature": idp.token(signing_key=other_key()),
    }
    for word, token in messages.items():
        r = client.post("/predict/s1", headers=_bearer(token))
        assert word in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("roles", [["viewer"], [], None, "viewer_admin", ["Admin"], {"a": 1}])
def test_a_valid_token_without_the_role_is_403(client, idp, roles) -> None:
    r = client.get("/jobs", headers=_bearer(idp.token(roles)))
    body = _refused(r, 403, "FORBIDDEN")
    assert body["error"]["details"] == [{"required_roles": ["data_scientist"]}]
    assert client.get("/jobs", headers=_bearer(idp.token(["data_scientist"]))).status_code == 200


def test_roles_as_a_space_separated_string_and_nested_claims(idp) -> None:
    client = TestClient(_app(_settings(auth_public_key=idp.public_pem())))
    assert client.get("/jobs", headers=_bearer(idp.token("viewer data_scientist"))).status_code \
        == 200
    nested = TestClient(_app(_settings(auth_public_key=idp.public_pem(),
                                       auth_roles_claim="realm_access.roles")))
    token = idp.token(None, realm_access={"roles": ["data_scientist"]})
    assert nested.get("/jobs", headers=_bearer(token)).status_code == 200
    assert nested.get("/jobs", headers=_bearer(idp.token(["data_scientist"]))).status_code == 403


def test_open_routes_need_no_token(client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_unknown_routes_are_refused_before_routing(client, idp) -> None:
    assert client.get("/nothing-here").status_code == 401
    assert client.get("/nothing-here", headers=_bearer(idp.token(["viewer"]))).status_code == 403
    assert client.get("/nothing-here", headers=_bearer(idp.token(["admin"]))).status_code == 404


def test_off_by_default() -> None:
    settings = Settings()
    assert settings.auth_enabled is False
    r = TestClient(_app(settings)).post("/predict/s1")
    assert r.status_code == 200 and r.json()["actor"] is None


def test_public_key_from_a_file(idp, tmp_path) -> None:
    path = tmp_path / "key.pem"
    path.write_text(idp.public_pem())
    client = TestClient(_app(_settings(auth_public_key=str(path))))
    assert client.post("/predict/s1", headers=_bearer(idp.token())).status_code == 200


def test_jwks_keys_are_cached_and_outlive_an_outage(idp) -> None:
    with idp.serve_jwks() as url:
        client = TestClient(_app(_settings(auth_jwks_url=url)))
        before = idp.jwks_requests
        for _ in range(5):
            assert client.post("/predict/s1", headers=_bearer(idp.token())).status_code == 200
        for i in range(5):  # random key ids do not each cost a fetch (cool-down)
            client.post("/predict/s1", headers=_bearer(idp.token(kid=f"random-{i}")))
        assert idp.jwks_requests - before <= 2
        r = client.post("/predict/s1", headers=_bearer(idp.token(kid="rotated-away")))
        assert "unknown key" in _refused(r, 401, "UNAUTHENTICATED")["error"]["message"]
    # The endpoint is gone: the keys already fetched still verify.
    assert client.post("/predict/s1", headers=_bearer(idp.token())).status_code == 200


def test_jwks_unreachable_without_keys_is_503(idp) -> None:
    with idp.serve_jwks() as url:
        pass  # the server is stopped: nothing answers at url
    client = TestClient(_app(_settings(auth_jwks_url=url)))
    _refused(client.post("/predict/s1", headers=_bearer(idp.token())), 503, "AUTH_UNAVAILABLE")


@pytest.mark.parametrize("auth", [
    {},  # no key source
    {"auth_jwks_url": "http://x/jwks", "auth_public_key": "k"},  # two
    {"auth_jwks_url": "http://x/jwks", "auth_audience": ""},
    {"auth_jwks_url": "http://x/jwks", "auth_algorithms": "HS256"},
    {"auth_jwks_url": "http://x/jwks", "auth_algorithms": "none"},
])
def test_half_a_configuration_fails_the_start(auth: dict) -> None:
    with pytest.raises(ValidationError):
        _settings(**auth)
