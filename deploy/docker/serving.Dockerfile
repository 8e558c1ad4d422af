# Serving image (Ray head and worker pods of the RayService):
# `docker build -f deploy/docker/serving.Dockerfile -t IMAGE:TAG .` from the repo root.
# Dependencies come from uv.lock with the `serving` extra only (Ray, Serve, MLflow client).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --extra serving
COPY README.md ./
COPY core core
COPY training_api training_api
COPY pipelines pipelines
COPY serving serving
RUN uv sync --frozen --no-editable --extra serving

FROM ${PYTHON_IMAGE} AS runtime
# KubeRay starts the container with `bash -lc "ulimit -n 65536; ray start ..."`; the user
# has a home like the upstream Ray images, but Ray's session files go to /tmp.
RUN useradd --uid 1000 --user-group --create-home --shell /bin/bash ray
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp STATE_DIR=/tmp/state RAY_USAGE_STATS_ENABLED=0
USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8265 6379 10001 8080
