"""Training-data storage: one Parquet file per accepted fit, under a local folder or S3.

Layout: `{root}/{series_id}/{stored_at}_{job_id}.parquet` with columns `timestamp` (Int64,
Unix seconds) and `value` (Float64). `stored_at` (UTC, microseconds) makes file names sort
in submission order, so when two submissions overlap the newer one wins. The job message
carries the file's URI (claim check).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import numpy as np
import polars as pl

from core.errors import StorageUnavailable
from core.naming import require_series_id


def _file_name(job_id: uuid.UUID) -> str:
    stored_at = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stored_at}_{uuid.UUID(str(job_id))}.parquet"


def to_frame(timestamps: np.ndarray, values: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": np.asarray(timestamps, dtype=np.int64),
            "value": np.asarray(values, dtype=np.float64),
        }
    )


def _empty() -> pl.LazyFrame:
    return pl.LazyFrame(schema={"timestamp": pl.Int64, "value": pl.Float64, "source": pl.String})


class TrainingDataStore(Protocol):
    def write(self, series_id: str, job_id: uuid.UUID, frame: pl.DataFrame) -> str: ...
    def delete(self, uri: str) -> None: ...
    def scan(self, uri: str) -> pl.LazyFrame: ...
    def scan_series(self, series_id: str) -> pl.LazyFrame: ...


class LocalDataStore:
    """A folder on a local or shared disk; writes are atomic and synced before they count."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def write(self, series_id: str, job_id: uuid.UUID, frame: pl.DataFrame) -> str:
        path = self.root / require_series_id(series_id) / _file_name(job_id)
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(tmp, statistics=True)
            # A 202 promises the data survives a crash: sync before the job row commits.
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            reason = getattr(exc, "strerror", None) or exc
            raise StorageUnavailable(f"training data could not be stored: {reason}") from exc
        return path.as_uri()

    def _local(self, uri: str) -> Path:
        parsed = urlparse(uri)
        path = Path(parsed.path).resolve()
        if parsed.scheme != "file" or not path.is_relative_to(self.root):
            raise ValueError(f"{uri!r} is not under the data root")
        return path

    def delete(self, uri: str) -> None:
        self._local(uri).unlink(missing_ok=True)

    def scan(self, uri: str) -> pl.LazyFrame:
        return pl.scan_parquet(self._local(uri))

    def scan_series(self, series_id: str) -> pl.LazyFrame:
        """Every file of the series, with a `source` column naming the file."""
        folder = self.root / require_series_id(series_id)
        if not any(folder.glob("*.parquet")):
            return _empty()
        return pl.scan_parquet(folder / "*.parquet", include_file_paths="source")


class S3DataStore:
    """An S3 bucket (MinIO in the cluster); credentials come from the usual AWS_* variables."""

    def __init__(self, root: str, endpoint_url: str = "") -> None:
        parsed = urlparse(root)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.storage_options: dict[str, str] = {}
        if endpoint_url:
            self.storage_options["aws_endpoint_url"] = endpoint_url
            if endpoint_url.startswith("http://"):
                self.storage_options["aws_allow_http"] = "true"

    def _uri(self, *parts: str) -> str:
        key = "/".join(p for p in (self.prefix, *parts) if p)
        return f"s3://{self.bucket}/{key}"

    def write(self, series_id: str, job_id: uuid.UUID, frame: pl.DataFrame) -> str:
        uri = self._uri(require_series_id(series_id), _file_name(job_id))
        try:
            frame.write_parquet(uri, storage_options=self.storage_options)
        except Exception as exc:  # object_store raises its own error types
            raise StorageUnavailable(f"training data could not be stored: {exc}") from exc
        return uri

    def delete(self, uri: str) -> None:
        from pyarrow import fs

        s3 = fs.S3FileSystem(endpoint_override=self.storage_options.get("aws_endpoint_url"))
        s3.delete_file(uri.removeprefix("s3://"))

    def scan(self, uri: str) -> pl.LazyFrame:
        return pl.scan_parquet(uri, storage_options=self.storage_options)

    def scan_series(self, series_id: str) -> pl.LazyFrame:
        glob = self._uri(require_series_id(series_id), "*.parquet")
        return pl.scan_parquet(glob, storage_options=self.storage_options,
                               include_file_paths="source")


def data_store(root: str, s3_endpoint_url: str = "") -> TrainingDataStore:
    if root.startswith("s3://"):
        return S3DataStore(root, s3_endpoint_url)
    return LocalDataStore(root)
