"""The roles table: who may call which route, open routes, and the closed default."""

import pytest

from core.policy import ADMIN_ONLY, OPEN, Role, allows, required_roles

VIEWER, SCIENTIST, ENGINEER, ADMIN = (frozenset({r}) for r in Role)


@pytest.mark.parametrize(("method", "path", "roles"), [
    ("POST", "/predict/sensor_1", VIEWER),
    ("POST", "/predict/sensor_1/batch", VIEWER),
    ("POST", "/fit/sensor_1", SCIENTIST),
    ("POST", "/fit/a/../b", SCIENTIST),  # reaches the route, which answers 422
    ("GET", "/jobs", SCIENTIST),
    ("GET", "/jobs/5b0c", SCIENTIST),
    ("DELETE", "/jobs/5b0c", SCIENTIST),
    ("GET", "/jobs/", SCIENTIST),
    ("GET", "/models/sensor_1/versions", SCIENTIST),
    ("GET", "/models/sensor_1/shadow", SCIENTIST),
    ("GET", "/series", SCIENTIST),
    ("GET", "/plot", SCIENTIST),
    ("HEAD", "/jobs", SCIENTIST),
    ("POST", "/models/sensor_1/versions/3/promote", ENGINEER),
    ("POST", "/models/sensor_1/versions/3/shadow", ENGINEER),
])
def test_each_route_names_its_role(method: str, path: str, roles: frozenset) -> None:
    assert required_roles(method, path) == roles


@pytest.mark.parametrize("path", [
    "/health", "/readiness", "/liveness", "/metrics", "/docs", "/redoc", "/openapi.json",
])
def test_probes_metrics_and_documents_are_open(path: str) -> None:
    assert required_roles("GET", path) == OPEN


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/predict/sensor_1"),  # predict is POST only
    ("POST", "/models/sensor_1/versions/3/delete"),  # not a rule: a later route stays closed
    ("POST", "/models/sensor_1/versions/3/promote/extra"),
    ("POST", "/models/a/b/versions/3/promote"),  # `*` is one segment
    ("POST", "/health"),
    ("GET", "/health/../fit/x"),  # no dot-segment games with the open paths
    ("GET", "/metricsx"),
    ("OPTIONS", "/predict/sensor_1"),
    ("GET", "/"),
    ("PUT", "/jobs/1"),
])
def test_anything_else_is_for_admin_only(method: str, path: str) -> None:
    assert required_roles(method, path) == ADMIN_ONLY


def test_roles_are_not_hierarchical_but_admin_passes_everything() -> None:
    needed = required_roles("POST", "/models/s/versions/1/promote")
    assert allows(ENGINEER, needed)
    assert allows(ADMIN, needed)
    assert allows(frozenset({"viewer", "ml_engineer"}), needed)  # roles add up
    assert not allows(SCIENTIST, needed)
    assert not allows(VIEWER, needed)
    assert not allows(frozenset(), needed)
    assert not allows(frozenset({"Admin", "administrator"}), ADMIN_ONLY)  # exact names only
    assert allows(frozenset(), OPEN)
