# syntax=docker/dockerfile:1
# The salesflow image: one console script, `salesflow`, whose verb is the container's command
# (`docker run IMAGE stream`, `docker run IMAGE produce generate --to-kafka ...`).
# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a self-contained venv ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/salesflow \
 && /opt/salesflow/bin/pip install --upgrade pip
WORKDIR /src
# Only what the wheel is built from (see [tool.hatch.build] in pyproject.toml).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY salesflow ./salesflow
COPY producers ./producers
COPY stream_app ./stream_app
COPY mart_builder ./mart_builder
COPY salesflow_cli ./salesflow_cli
RUN /opt/salesflow/bin/pip install . \
 && /opt/salesflow/bin/salesflow --help >/dev/null

# --- runtime: the venv and a non-root user, nothing else ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="salesflow" \
      org.opencontainers.image.description="Streaming sales analytics: Kafka, a transactional stream app, data marts" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 salesflow \
 && useradd --system --uid 10001 --gid salesflow --home-dir /home/salesflow --create-home \
            --shell /usr/sbin/nologin salesflow \
 && install -d -o salesflow -g salesflow -m 0750 /var/lib/salesflow /var/lib/salesflow/state
COPY --from=build /opt/salesflow /opt/salesflow
ENV PATH=/opt/salesflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SALESFLOW_METRICS_PORT=9464
# The stream worker keeps its on-disk table state under /var/lib/salesflow/state (a volume).
WORKDIR /var/lib/salesflow
USER salesflow:salesflow
EXPOSE 9464
ENTRYPOINT ["salesflow"]
CMD ["--help"]
