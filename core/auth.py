"""Authentication and authorization of both HTTP apps (defence in depth behind Istio).

`AuthMiddleware` runs before routing: with AUTH_ENABLED it verifies the Bearer JWT
(core/tokens.py) and checks the roles the policy table (core/policy.py) asks for the method
and path, answering 401 UNAUTHENTICATED or 403 FORBIDDEN with the standard error body. It
is pure ASGI, so it works the same in uvicorn and in a Ray Serve replica, and covers routes
added later without a change to them.

Routes that record who did something call `current_actor(request)`: the verified token's
`sub`, or None when authentication is off (then the caller decides, e.g. a header).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import Forbidden, PlatformError, Unauthenticated
from core.http import error_response
from core.policy import allows, required_roles
from core.settings import Settings
from core.tokens import Principal, TokenVerifier

log = logging.getLogger(__name__)

_SCOPE_KEY = "adp.principal"
_REALM = 'Bearer realm="anomaly-platform"'


class AuthMiddleware:
    """`settings` is called on the first request: the Serve ingress is built at import time,
    before a replica's environment is read."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings
        self._verifier: TokenVerifier | None = None
        self._configured = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        verifier = self._verifier_if_enabled() if scope["type"] == "http" else None
        needed = required_roles(scope["method"], scope["path"]) if verifier else None
        if not needed:
            return await self.app(scope, receive, send)
        try:
            principal = await _authenticate(verifier, scope)
            if not allows(principal.roles, needed):
                raise Forbidden(
                    f"{scope['method']} {scope['path'][:200]} needs one of the roles "
                    f"{sorted(needed)}; the token has {sorted(principal.roles)}",
                    details=[{"required_roles": sorted(needed)}],
                    headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
                )
        except PlatformError as exc:
            log.info(
                "request refused: %s",
                exc.message,
                extra={"code": exc.code, "method": scope["method"], "path": scope["path"][:200]},
            )
            response = error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
            return await response(scope, receive, send)
        scope[_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    def _verifier_if_enabled(self) -> TokenVerifier | None:
        if not self._configured:
            settings = self._settings()
            self._verifier = TokenVerifier(settings) if settings.auth_enabled else None
            self._configured = True
        return self._verifier


async def _authenticate(verifier: TokenVerifier, scope: Scope) -> Principal:
    token = _bearer_token(scope)
    try:
        return await verifier.verify(token)
    except Unauthenticated as exc:
        exc.headers = {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'}
        raise


def _bearer_token(scope: Scope) -> str:
    values = [v for k, v in scope["headers"] if k == b"authorization"]
    scheme, _, token = (values[0].decode("latin-1") if len(values) == 1 else "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "send one header Authorization: Bearer <token>",
            headers={"WWW-Authenticate": _REALM},
        )
    return token.strip()


def current_principal(request: Request) -> Principal | None:
    """The verified caller of this request; None when authentication is off or not needed."""
    return request.scope.get(_SCOPE_KEY)


def current_actor(request: Request) -> str | None:
    """The `sub` of the verified token, for audit logs; None when authentication is off."""
    principal = current_principal(request)
    return principal.subject if principal else None
