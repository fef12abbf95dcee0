# Image of the worker, run by Arkindex's Ponos agents (GPU hosts need the NVIDIA container runtime).
# Build with BuildKit (docs/docker.md); `make docker-check` builds it and runs the job in it.
#
# The base: any Debian-based image whose `python3` satisfies pyproject.toml's requires-python and
# has the venv module (tests/top/test_dockerfile.py checks the default). Where no registry is
# reachable, scripts/docker_check.sh builds one with debootstrap (docs/docker.md).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# The wheels bring the native libraries they link (OpenCV is the headless build, PyTorch bundles
# libgomp and the CUDA libraries; libstdc++ and zlib are in the base image; matplotlib ships the
# DejaVu font that train/environment.py gives Ultralytics under Arial's names). One library is
# loaded at import time instead: arkindex-base-worker imports python-magic, which needs libmagic.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

# Teklia's worker template: a non-root user `worker`, uid 2000. /data is where Ponos mounts the
# task's data volume (base-worker's default for $PONOS_DATA); owned by the worker, so that a fresh
# volume mounted there is writable by it too.
RUN groupadd --gid 2000 worker \
    && useradd --uid 2000 --gid 2000 --create-home --home-dir /home/worker --shell /bin/sh worker \
    && mkdir /data && chown worker:worker /data

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    YOLO_CONFIG_DIR=/home/worker/ultralytics

WORKDIR /src

# The README's install, `pip install .`, into a virtual environment (Debian's own python3 refuses
# system-wide installs), in two layers: first the dependencies pinned in pyproject.toml (6 GB,
# kept in the build cache while pyproject.toml is unchanged), then the package itself. PyPI's
# torch wheel is the CUDA build, which GPU hosts need; it falls back to the CPU elsewhere. Two
# optional build secrets, never written to a layer:
#   ca      the CA bundle of a re-signing HTTPS proxy (pip's certificate store for this step)
#   pipconf a pip configuration (extra indexes, e.g. where torch's wheels lie on the build host)
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca \
    --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install --quiet --upgrade pip \
    && python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" >/tmp/requirements.txt \
    && pip install --quiet -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY worker_yolo_training ./worker_yolo_training
# Build requirements (setuptools) come from an index too; `pip check`: the dependencies above are
# the package's
RUN --mount=type=secret,id=ca \
    --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && pip install --quiet --no-deps . \
    && pip check \
    && cd / && rm -rf /src

USER worker
WORKDIR /home/worker

CMD ["worker-yolo-training"]
