"""The fault suite: the real services of the integration tests, faults injected at chosen
moments, and every scenario ending with an exact count (printed at the end of the run).

`make test-faults` runs it (and `.ci/run`); `make test` leaves it out: it stops and kills
services on purpose and takes ~10 minutes.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import *  # noqa: F403  the same services, once per session

COUNTS: list[str] = []


@pytest.fixture
def record():
    """Record a scenario's final counts for the summary."""
    return COUNTS.append


def pytest_terminal_summary(terminalreporter) -> None:
    if COUNTS:
        terminalreporter.section("fault scenarios: counts")
        for line in COUNTS:
            terminalreporter.write_line(line)
