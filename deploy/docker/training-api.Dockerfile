# Training API image: `docker build -f deploy/docker/training-api.Dockerfile -t IMAGE:TAG .`
# (from the repo root). Dependencies come from uv.lock with the `api` extra only.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --extra api
COPY README.md ./
COPY core core
COPY training_api training_api
COPY pipelines pipelines
COPY serving serving
# The project itself, as a regular (non-editable) install into the venv.
RUN uv sync --frozen --no-editable --extra api

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    STATE_DIR=/tmp/state API_HOST=0.0.0.0 API_PORT=8030
USER 10001:10001
WORKDIR /tmp
EXPOSE 8030
CMD ["uvicorn", "training_api.main:app", "--host", "0.0.0.0", "--port", "8030", \
     "--proxy-headers", "--forwarded-allow-ips", "*"]
