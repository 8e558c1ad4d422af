"""Bearer JWT verification (PyJWT): signature, expiry, issuer, audience, subject and roles.

Keys come from a JWKS URL or from one static public key. JWKS keys are kept in memory and
fetched again, in a thread (never on the event loop), when they are older than
`JWKS_TTL_S` or a token names a key id not seen yet; unknown key ids refetch at most every
`JWKS_COOLDOWN_S`, so random `kid`s cannot turn requests into JWKS fetches. When the
endpoint is down the keys already fetched keep working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from anyio import to_thread
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from core.errors import AuthUnavailable, Unauthenticated
from core.settings import Settings

log = logging.getLogger(__name__)

JWKS_TTL_S = 300.0
JWKS_COOLDOWN_S = 10.0
JWKS_TIMEOUT_S = 5.0
LEEWAY_S = 30  # clock skew between the identity provider and us


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    roles: frozenset[str]


class StaticKey:
    def __init__(self, pem_or_path: str) -> None:
        text = pem_or_path.strip()
        pem = text if text.startswith("-----BEGIN") else Path(text).read_text()
        self._key = load_pem_public_key(pem.encode())  # a bad key fails the start

    async def key(self, _kid: str | None) -> Any:
        return self._key


class JwksKeys:
    def __init__(self, url: str) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=JWKS_TIMEOUT_S)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")  # last successful fetch
        self._tried_at = -float("inf")  # last attempt, successful or not
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> Any:
        if not kid:
            raise Unauthenticated("the token header has no key id (kid)")
        if kid in self._keys and time.monotonic() - self._fetched_at < JWKS_TTL_S:
            return self._keys[kid]
        async with self._lock:  # one fetch for many waiting requests
            now = time.monotonic()
            expired = now - self._fetched_at >= JWKS_TTL_S
            if (expired or kid not in self._keys) and now - self._tried_at >= JWKS_COOLDOWN_S:
                await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if not self._keys and self._fetched_at < self._tried_at:
            raise AuthUnavailable("the signing keys cannot be fetched; retry later")
        raise Unauthenticated("the token is signed with an unknown key")

    async def _refresh(self) -> None:
        self._tried_at = time.monotonic()
        try:
            found = await to_thread.run_sync(self._client.get_signing_keys, True)
        except jwt.PyJWKClientError as exc:  # connection errors included: keep the old keys
            log.warning("JWKS fetch from %s failed: %s", self._client.uri, exc)
            return
        self._keys = {k.key_id: k for k in found if k.key_id}
        self._fetched_at = time.monotonic()


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.algorithms = settings.auth_algorithm_list
        self.issuer, self.audience = settings.auth_issuer, settings.auth_audience
        self.roles_claim = settings.auth_roles_claim
        self.keys: StaticKey | JwksKeys = (
            StaticKey(settings.auth_public_key)
            if settings.auth_public_key
            else JwksKeys(settings.auth_jwks_url)
        )

    async def verify(self, token: str) -> Principal:
        """The token's principal; Unauthenticated naming what is wrong with it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise Unauthenticated(f"token algorithm {str(alg)[:20]!r} is not accepted")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not meant for this audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token comes from another issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token is invalid: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token subject (sub) must be a non-empty string")
        return Principal(subject, roles_of(claims, self.roles_claim))


def roles_of(claims: dict[str, Any], claim: str) -> frozenset[str]:
    """The roles at `claim` (dots reach nested objects): a list, or a space-separated string."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(role for role in value if isinstance(role, str))
    return frozenset()
