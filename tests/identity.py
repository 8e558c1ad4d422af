"""A throwaway identity provider for the auth tests: an RSA key made at test time, tokens
signed with it, its public key as PEM and as a JWKS served over HTTP on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://identity.test/"
AUDIENCE = "anomaly-platform"


class IdentityProvider:
    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_requests = 0

    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(
        self,
        roles: Any = ("viewer",),
        *,
        sub: str | None = "alice",
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        expires_in: float = 600,
        signing_key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iss": issuer, "aud": audience, "iat": now,
                                   "exp": int(now + expires_in), **claims}
        if sub is not None:
            payload["sub"] = sub
        if roles is not None:
            payload["roles"] = list(roles) if isinstance(roles, tuple) else roles
        return jwt.encode(payload, signing_key or self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid})

    @contextmanager
    def serve_jwks(self) -> Iterator[str]:
        """The JWKS at http://127.0.0.1:<free port>/jwks.json while the block runs."""
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                provider.jwks_requests += 1
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        finally:
            server.shutdown()
            server.server_close()


def other_key() -> rsa.RSAPrivateKey:
    """A key the services do not trust: a token signed with it has a bad signature."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
