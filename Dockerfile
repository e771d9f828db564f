# syntax=docker/dockerfile:1
# edalle: two images from one file.
#
#   docker build -t edalle .                  # `gpu` (the default): the bot and the worker, JAX and torch for CUDA 13
#   docker build --target bot -t edalle-bot . # the bot alone, no model code: for `edalle bot --no-worker`
#
#   docker run --gpus all --env-file .env -v edalle-data:/data edalle            # bot + local worker in one container
#   docker compose up -d                                                          # compose.yaml: bot + one GPU worker
#
# Both run Python 3.11, the version CI tests, with the exact package versions CI tests (constraints.txt).
# The GPU image starts from NVIDIA's `-base` CUDA image: the torch and JAX wheels bring their own CUDA 13
# libraries, so the host needs only the NVIDIA driver (580 or newer) and the NVIDIA Container Toolkit; the
# base image's NVIDIA_REQUIRE_CUDA makes the toolkit refuse, with a message, a driver too old for CUDA 13.
# Python itself comes from uv (python-build-standalone), as Ubuntu 24.04 ships 3.12.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- the bot: Discord, the job store and the CLI; no jax, no torch ----------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS bot

ENV PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    EDALLE_DATA_DIR=/data

COPY --from=uv /uv /usr/local/bin/uv
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && uv venv --python /usr/local/bin/python3 /opt/venv \
    && useradd --create-home --uid 1000 edalle && mkdir -p /data && chown edalle /data

WORKDIR /app
# The dependencies first, in a layer of their own, so a change to the code does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN uv pip install -c constraints.txt -r pyproject.toml --extra postgres
COPY README.md LICENSE ./
COPY migrations ./migrations
COPY edalle ./edalle
COPY bot ./bot
RUN uv pip install --no-deps .

USER edalle
VOLUME ["/data"]
# Healthy while the job database answers (`edalle status`, which is also the command to run by hand).
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 CMD ["edalle", "status"]
# tini forwards SIGTERM to `edalle`, which stops the bot cleanly.
ENTRYPOINT ["tini", "--", "edalle"]
CMD ["bot", "--no-worker"]

# ---- the GPU image: the bot and the worker with the models (the default target) -----------------------------
FROM nvidia/cuda:13.0.0-base-ubuntu24.04 AS gpu

ARG PYTHON_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    EDALLE_DATA_DIR=/data \
    XLA_PYTHON_CLIENT_PREALLOCATE=false

COPY --from=uv /uv /usr/local/bin/uv
# The same uid as the bot image: both write to the shared /data volume (Ubuntu's own `ubuntu` user has it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && uv python install ${PYTHON_VERSION} \
    && uv venv --python ${PYTHON_VERSION} /opt/venv \
    && (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 edalle && mkdir -p /data && chown edalle /data

WORKDIR /app
# The dependencies first (several GB, rarely changing), then the code.
COPY pyproject.toml constraints.txt ./
RUN uv pip install -c constraints.txt -r pyproject.toml --extra worker --extra cuda --extra postgres
COPY README.md LICENSE ./
COPY migrations ./migrations
COPY edalle ./edalle
COPY bot ./bot
RUN uv pip install --no-deps .

USER edalle
VOLUME ["/data"]
# Healthy once a worker of this container is alive in the queue (after its first start fetched and loaded the
# models: hence the long start period). `edalle status` by hand shows the queue and every worker.
HEALTHCHECK --interval=60s --timeout=30s --start-period=30m --retries=3 \
    CMD ["edalle", "status", "--require-worker", "this-host"]
# tini forwards SIGTERM to `edalle`, which stops the bot, then the worker (it hands running jobs back).
ENTRYPOINT ["tini", "--", "edalle"]
CMD ["bot"]
