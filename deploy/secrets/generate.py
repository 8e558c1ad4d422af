"""Write the git-ignored env files of deploy/secrets/ with fresh random credentials.

    python3 deploy/secrets/generate.py [--force]

Every password appears once here and is spelt the same in each file that needs it (the
RabbitMQ password in the broker's file and in each client's RABBITMQ_URL, ...). Existing
files are kept unless --force is given. Standard library only.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def credentials() -> dict[str, str]:
    def token() -> str:
        return secrets.token_hex(24)  # URL-safe: the passwords also go into URLs

    return {
        "rabbit_user": "platform",
        "rabbit_pass": token(),
        "cookie": secrets.token_hex(32),
        "pg_admin": token(),
        "pg_mlflow": token(),
        "pg_dagster": token(),
        "pg_jobs": token(),
        "minio_root_user": "minio-admin",
        "minio_root_pass": token(),
        "s3_key": "platform-" + secrets.token_hex(6),
        "s3_secret": token(),
    }


def env_files(c: dict[str, str]) -> dict[str, dict[str, str]]:
    rabbit_url = f"amqp://{c['rabbit_user']}:{c['rabbit_pass']}@rabbitmq:5672/"
    s3 = {"AWS_ACCESS_KEY_ID": c["s3_key"], "AWS_SECRET_ACCESS_KEY": c["s3_secret"]}
    jobs_db = f"jobs:{c['pg_jobs']}@postgresql:5432/jobs"
    return {
        "rabbitmq.env": {
            "RABBITMQ_DEFAULT_USER": c["rabbit_user"],
            "RABBITMQ_DEFAULT_PASS": c["rabbit_pass"],
            "RABBITMQ_ERLANG_COOKIE": c["cookie"],
        },
        "postgresql.env": {
            "POSTGRES_PASSWORD": c["pg_admin"],
            "MLFLOW_DB_PASSWORD": c["pg_mlflow"],
            "DAGSTER_DB_PASSWORD": c["pg_dagster"],
            "JOBS_DB_PASSWORD": c["pg_jobs"],
        },
        "minio.env": {
            "MINIO_ROOT_USER": c["minio_root_user"],
            "MINIO_ROOT_PASSWORD": c["minio_root_pass"],
            "PLATFORM_ACCESS_KEY": c["s3_key"],
            "PLATFORM_SECRET_KEY": c["s3_secret"],
        },
        "mlflow.env": {
            "MLFLOW_BACKEND_STORE_URI": (
                f"postgresql+psycopg2://mlflow:{c['pg_mlflow']}@postgresql:5432/mlflow"
            ),
            **s3,
        },
        # The API has psycopg 3 (extra `api`), the pipelines psycopg2 (dagster-postgres).
        "training-api.env": {
            "RABBITMQ_URL": rabbit_url,
            "JOB_STORE_URL": f"postgresql+psycopg://{jobs_db}",
            **s3,
        },
        "serving.env": {"RABBITMQ_URL": rabbit_url},
        "pipelines.env": {
            "RABBITMQ_URL": rabbit_url,
            "JOB_STORE_URL": f"postgresql+psycopg2://{jobs_db}",
            **s3,
        },
        "dagster-postgresql.env": {"postgresql-password": c["pg_dagster"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing env files")
    parser.add_argument("--dir", type=Path, default=HERE, help="where to write (default: here)")
    args = parser.parse_args()
    files = env_files(credentials())
    existing = [name for name in files if (args.dir / name).exists()]
    if existing and not args.force:
        sys.stderr.write(f"kept existing {', '.join(existing)} (use --force to replace)\n")
        return 0
    for name, values in files.items():
        path = args.dir / name
        path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        path.chmod(0o600)
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
