"""deploy/secrets/generate.py writes env files that build and agree with one another."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tests.deploy.manifests import DEPLOY, kustomize


def test_generated_credentials_build_and_agree(tmp_path: Path) -> None:
    work = tmp_path / "secrets"
    shutil.copytree(DEPLOY / "secrets", work, ignore=shutil.ignore_patterns("*.env"))
    subprocess.run([sys.executable, str(work / "generate.py")], check=True, capture_output=True)
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
        for d in kustomize(work)
    }
    broker = secrets["rabbitmq"]
    for client in ("training-api", "serving", "pipelines"):
        url = urlsplit(secrets[client]["RABBITMQ_URL"])
        assert (url.username, url.password) == (
            broker["RABBITMQ_DEFAULT_USER"], broker["RABBITMQ_DEFAULT_PASS"])
    pg = secrets["postgresql"]
    for client in ("training-api", "pipelines"):
        assert urlsplit(secrets[client]["JOB_STORE_URL"]).password == pg["JOBS_DB_PASSWORD"]
    assert urlsplit(secrets["mlflow"]["MLFLOW_BACKEND_STORE_URI"]).password == (
        pg["MLFLOW_DB_PASSWORD"])
    assert secrets["dagster-postgresql-secret"]["postgresql-password"] == (
        pg["DAGSTER_DB_PASSWORD"])
    for client in ("training-api", "pipelines", "mlflow"):
        assert secrets[client]["AWS_ACCESS_KEY_ID"] == secrets["minio"]["PLATFORM_ACCESS_KEY"]
        assert secrets[client]["AWS_SECRET_ACCESS_KEY"] == (
            secrets["minio"]["PLATFORM_SECRET_KEY"])
