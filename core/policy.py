"""Who may call what: one table of (methods, path pattern) → roles, shared by both HTTP apps.

The same roles as the Istio AuthorizationPolicies (deploy/base/istio), checked again in the
applications. A pattern's `*` is one path segment and `**` the rest of the path (one
character or more, slashes included: `/fit/{series_id:path}` must reach its own validation).
The first matching rule wins; a path no rule names is for `admin` only, so a route added
later is closed until it is given a rule. `admin` passes every rule.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    DATA_SCIENTIST = "data_scientist"
    ML_ENGINEER = "ml_engineer"
    ADMIN = "admin"


OPEN: frozenset[str] = frozenset()  # no token needed
_VIEWER = frozenset({Role.VIEWER})
_SCIENTIST = frozenset({Role.DATA_SCIENTIST})
_ENGINEER = frozenset({Role.ML_ENGINEER})

RULES: tuple[tuple[str, str, frozenset[str]], ...] = (
    # Probes, Prometheus and the API documents stay open (the mesh restricts who reaches them).
    ("GET", "/health", OPEN),
    ("GET", "/readiness", OPEN),
    ("GET", "/liveness", OPEN),
    ("GET", "/metrics", OPEN),
    ("GET", "/docs", OPEN),
    ("GET", "/docs/oauth2-redirect", OPEN),
    ("GET", "/redoc", OPEN),
    ("GET", "/openapi.json", OPEN),
    # Serving.
    ("POST", "/predict/**", _VIEWER),
    # Training and jobs.
    ("POST", "/fit/**", _SCIENTIST),
    ("GET DELETE", "/jobs", _SCIENTIST),
    ("GET DELETE", "/jobs/**", _SCIENTIST),
    # Model management (issue 7): promotion and shadows, then reading models.
    ("POST", "/models/*/versions/*/promote", _ENGINEER),
    ("POST", "/models/*/versions/*/shadow", _ENGINEER),
    ("GET", "/models", _SCIENTIST),
    ("GET", "/models/**", _SCIENTIST),
    ("GET", "/series", _SCIENTIST),
    ("GET", "/series/**", _SCIENTIST),
    ("GET", "/plot", _SCIENTIST),
    ("GET", "/plot/**", _SCIENTIST),
)
ADMIN_ONLY: frozenset[str] = frozenset({Role.ADMIN})


def _compile(pattern: str) -> re.Pattern[str]:
    parts = (
        ".+" if p == "**" else "[^/]+" if p == "*" else re.escape(p) for p in pattern.split("/")
    )
    return re.compile("/".join(parts), re.DOTALL)


_COMPILED = tuple(
    (frozenset(methods.split()), _compile(pattern), roles) for methods, pattern, roles in RULES
)


def required_roles(method: str, path: str) -> frozenset[str]:
    """Roles of which one is needed for the request; OPEN (empty) when none is."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    if len(path) > 1:
        path = path.removesuffix("/")  # /jobs/ is /jobs, as the router's redirect says
    for methods, pattern, roles in _COMPILED:
        if method in methods and pattern.fullmatch(path):
            return roles
    return ADMIN_ONLY


def allows(held: frozenset[str], needed: frozenset[str]) -> bool:
    return not needed or Role.ADMIN in held or bool(held & needed)
