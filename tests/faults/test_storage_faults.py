"""A full disk or a read-only data root at fit time: a clear 503 `STORAGE_UNAVAILABLE`,
no job row without its data and no data without its job."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_series
from tests.integration.conftest import API_PORT
from tests.integration.services import TrainingApi

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"mount {args}: {done.stderr} (the fault suite runs as root)"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs as the data root: filled up, or made read-only, at will."""
    root = tmp_path / "data"
    root.mkdir()
    _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root))
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def api_on_small_disk(small_disk: Path, tmp_path: Path) -> Iterator[TrainingApi]:
    (tmp_path / "state").mkdir()
    service = TrainingApi(
        tmp_path / "state",
        API_PORT + 1,
        # Its own job store: its messages must not reach the session's pipeline (which would
        # dead-letter a job it does not know), so its broker is one that never answers.
        {"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:9/", "DATA_ROOT": str(small_disk)},
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_a_full_or_read_only_data_root_loses_nothing(
    api_on_small_disk, small_disk, series_id, record
):
    def fit(seed: int) -> httpx.Response:  # other data each time: an identical fit is deduplicated
        return http.post(f"/fit/{series_id}", json={"training_data": make_series(seed=seed)})

    def counts() -> tuple[int, int, int]:
        jobs = http.get("/jobs", params={"series_id": series_id}).json()["total"]
        files = len(list(small_disk.glob(f"{series_id}/*")))
        return jobs, files, http.get("/health").json()["outbox_backlog"]  # kept: no broker

    with httpx.Client(base_url=api_on_small_disk.base_url, timeout=30) as http:
        filler = small_disk / "filler"
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):  # to the last byte
            while True:
                f.write(b"\0" * 65536)
        full = fit(1)
        after_full = counts()

        filler.unlink()
        accepted = fit(2)
        after_space = counts()

        _mount("-o", "remount,ro", str(small_disk))
        try:
            read_only = fit(3)
            after_read_only = counts()
        finally:
            _mount("-o", "remount,rw", str(small_disk))

    record(
        f"full disk: {full.status_code} {full.json()['error']['code']}, then (jobs, files, "
        f"outbox) {after_full}; space again: {accepted.status_code} {after_space}; "
        f"read-only: {read_only.status_code} {read_only.json()['error']['code']} "
        f"{after_read_only}"
    )
    for answer in (full, read_only):
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "STORAGE_UNAVAILABLE")
        assert "could not be stored" in answer.json()["error"]["message"]
    assert after_full == (0, 0, 0)
    assert accepted.status_code == 202 and after_space == (1, 1, 1)
    assert after_read_only == (1, 1, 1)  # the refused fit left no job, file or message
    assert shutil.disk_usage(small_disk).free > 0
