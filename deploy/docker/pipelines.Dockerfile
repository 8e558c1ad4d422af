# Pipelines image (Dagster code location, run workers and step Jobs):
# `docker build -f deploy/docker/pipelines.Dockerfile -t IMAGE:TAG .` from the repo root.
# Dependencies come from uv.lock with the `pipelines` extra only.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --extra pipelines
COPY README.md ./
COPY core core
COPY training_api training_api
COPY pipelines pipelines
COPY serving serving
RUN uv sync --frozen --no-editable --extra pipelines

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# The Helm chart mounts the instance (dagster.yaml) at DAGSTER_HOME; HOME and the scratch
# space are /tmp, the only writable folder under a read-only root filesystem.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp STATE_DIR=/tmp/state DAGSTER_HOME=/opt/dagster/dagster_home
USER 10001:10001
WORKDIR /tmp
EXPOSE 3030
# The chart starts the code server with its own arguments (dagsterApiGrpcArgs); this is the
# same server for `docker run`.
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", \
     "--module-name", "pipelines.definitions", "--attribute", "defs"]
