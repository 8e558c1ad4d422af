"""Both HTTP APIs fuzzed from their own OpenAPI documents (schemathesis, valid and invalid
data) against the real processes: the training API
(uvicorn) and serving (Ray Serve). No answer may be a 5xx, and the services' logs may show
no unhandled exception while the fuzzing runs."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from core.settings import Settings
from serving.runtime import new_app as new_serving_app
from training_api.app import create_app as create_training_api

pytestmark = pytest.mark.integration

EXAMPLES = 200  # per operation: about 10 s of requests for both APIs
_FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=list(HealthCheck))


def _training_api_document() -> dict:
    """The training API's OpenAPI document, built by the same code the process runs
    (create_app configures logging: the test session's handlers are put back)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return create_training_api(Settings()).openapi()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# Loaded when the module is collected: schemathesis' lazy fixture loader does not work
# with this pytest; the processes' own /openapi.json is checked against these below.
API_DOCUMENT, SERVING_DOCUMENT = _training_api_document(), new_serving_app().openapi()
API_SCHEMA = schemathesis.openapi.from_dict(API_DOCUMENT)
SERVING_SCHEMA = schemathesis.openapi.from_dict(SERVING_DOCUMENT)


@pytest.fixture(scope="module")
def log_marks(api, serve) -> dict[Path, int]:
    """Where the services' logs end before the fuzzing starts."""
    return {p: p.stat().st_size if p.exists() else 0 for p in (api.log_path, serve.log_path)}


def test_the_processes_serve_the_documents_fuzzed(api, serve, log_marks):
    assert httpx.get(f"{api.base_url}/openapi.json").json() == API_DOCUMENT
    served = httpx.get(f"{serve.url}/openapi.json").json()
    differing = {(path, method) for path, ops in SERVING_DOCUMENT["paths"].items()
                 for method, op in ops.items() if served["paths"].get(path, {}).get(method) != op}
    assert not differing, [(d, served["paths"].get(d[0])) for d in sorted(differing)]
    assert served == SERVING_DOCUMENT


@API_SCHEMA.parametrize()
@_FUZZ
def test_training_api_never_answers_5xx(case, api, log_marks):
    case.call_and_validate(base_url=api.base_url, checks=[not_a_server_error], timeout=30)


@SERVING_SCHEMA.parametrize()
@_FUZZ
def test_serving_never_answers_5xx(case, serve, log_marks):
    case.call_and_validate(base_url=serve.url, checks=[not_a_server_error], timeout=30)


def unhandled_since(path: Path, offset: int) -> list[str]:
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    return [line for line in lines
            if "Traceback" in line or '"level": "ERROR"' in line or '"level": "CRITICAL"' in line]


def test_no_unhandled_exception_in_the_logs(log_marks):
    """Runs after the fuzz tests of this module (pytest keeps the file's order)."""
    for path, offset in log_marks.items():
        found = unhandled_since(path, offset)
        assert not found, "\n".join(found[:20])
