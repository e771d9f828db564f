# edalle: the Discord bot and the GPU worker in one image (JAX with CUDA for DALL·E mini, torch for VQGAN and CLIP).
#
#   docker compose up -d              # bot + one GPU worker on a shared data volume (compose.yaml)
#   docker run --gpus all --env-file .env -v edalle-data:/data edalle bot    # both in one container
#
# The CUDA runtime comes from the base image; the pip wheels of torch (cu124) and jax[cuda12] bring their own
# cuDNN/cuBLAS, so only the host's NVIDIA driver (and the NVIDIA Container Toolkit) is needed.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    EDALLE_DATA_DIR=/data \
    XLA_PYTHON_CLIENT_PREALLOCATE=false

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# The heavy, rarely changing layers first: torch for CUDA 12.4, then JAX for CUDA 12.
RUN pip install --upgrade pip setuptools wheel \
    && pip install torch torchvision --index-url https://download.pytorch.org/whl/cu124 \
    && pip install 'jax[cuda12]'

WORKDIR /app
COPY pyproject.toml README.md ./
COPY edalle ./edalle
COPY bot ./bot
RUN pip install '.[postgres]' && useradd --create-home --uid 1000 edalle && mkdir -p /data && chown edalle /data

USER edalle
VOLUME ["/data"]
# tini forwards SIGTERM to `edalle`, which stops the bot, then the worker (it hands running jobs back).
ENTRYPOINT ["tini", "--", "edalle"]
CMD ["bot"]
