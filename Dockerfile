# Image of the worker, run by Arkindex's Ponos agents (GPU hosts need the NVIDIA container runtime).
# Python must satisfy pyproject.toml's requires-python; tests/top/test_dockerfile.py checks it.
FROM python:3.11-slim-bookworm

# The wheels bring the native libraries they link (OpenCV is the headless build, PyTorch bundles
# libgomp and the CUDA libraries; libstdc++ and zlib are in the base image). One library is loaded
# at import time instead: arkindex-base-worker imports python-magic, which needs libmagic.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/worker \
    YOLO_CONFIG_DIR=/home/worker/ultralytics

WORKDIR /src

# The README's plain install route. PyPI's default torch wheel is a CUDA build, which is what
# GPU hosts need; it falls back to the CPU elsewhere.
COPY pyproject.toml README.md ./
COPY worker_yolo_training ./worker_yolo_training
RUN pip install --no-cache-dir . \
    && rm -rf /src

# Runs as root, like Arkindex workers usually do, so that the task's data volume is writable
# whoever owns it. Any other user id works too (`docker run --user`): HOME, where Ultralytics'
# settings, fonts and downloaded weights go, is writable by all.
RUN mkdir -p "$HOME" && chmod 1777 "$HOME"
WORKDIR /home/worker

CMD ["worker-yolo-training"]
