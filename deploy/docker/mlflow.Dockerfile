# MLflow tracking server image: `docker build -f deploy/docker/mlflow.Dockerfile -t IMAGE:TAG .`
# from the repo root. Dependencies come from uv.lock with the `tracking` extra (MLflow,
# the PostgreSQL driver, boto3 for the S3 artifact store); no project code is needed.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --extra tracking

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000
# The Deployment passes the backend store and artifact destination (deploy/base/mlflow/).
ENTRYPOINT ["mlflow", "server"]
