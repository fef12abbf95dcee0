#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu.py needs on the lent GPU machine into .whl/ (git-ignored).
#
# That machine has Python 3.12 with PyTorch, torchvision, numpy, Pillow, matplotlib, OpenCV, PyYAML,
# requests, urllib3, httpx, lxml, psutil, nvidia-ml-py, tqdm, cloudpickle, ... but none of the
# packages below, and no network. The list is what the worker imports at run time that the machine
# lacks (benchmarks/gpu.py: CARRIED_WHEELS, checked by tests/top/test_gpu_bench.py), each pinned as in
# pyproject.toml or as the pinned packages require; --no-deps, so the list is the whole closure.
# It also fetches Debian's libmagic1 (python-magic loads libmagic.so.1 when imported), used only
# when the machine has no libmagic of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYTHON=${PYTHON:-python3}  # any python with pip: the wheels are chosen for 3.12
mkdir -p "$DEST"
# Kept in step with benchmarks/gpu.py CARRIED_WHEELS
PACKAGES=(
    ultralytics-opencv-headless==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99
    polars==2.1.0 polars-runtime-32==2.1.0
    arkindex-base-worker==0.6.0 arkindex-client==1.3.0 arkindex-export==0.2.5
    teklia-toolbox==0.3.2 typesystem==0.4.1 python-gnupg==0.5.6 python-magic==0.4.27
    humanize==4.16.0 shapely==2.1.2 zstandard==0.25.0 tenacity==9.2.1
)
# Only what is missing: a wheel repacked below no longer matches PyPI's hash
MISSING=()
for package in "${PACKAGES[@]}"; do
    wheel="$(echo "${package%%==*}" | tr - _)-${package##*==}-"
    ls "$DEST/$wheel"*.whl >/dev/null 2>&1 || MISSING+=("$package")
done
if ((${#MISSING[@]})); then
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$DEST" "${MISSING[@]}"
fi
# peewee 3.17.0 (arkindex-export's pin) is published as source only: build it without its optional
# C extensions (NO_SQLITE), which gives a py3-none-any wheel; playhouse falls back to pure Python.
if ! ls "$DEST"/peewee-3.17.0-py3-none-any.whl >/dev/null 2>&1; then
    build=$(mktemp -d)
    "$PYTHON" -m pip download --quiet --no-deps --no-binary=:all: -d "$build" peewee==3.17.0
    NO_SQLITE=1 "$PYTHON" -m pip wheel --quiet --no-cache-dir --no-deps -w "$DEST" "$build"/peewee-*.tar.gz
    rm -rf "$build"
fi
if ! ls "$DEST"/libmagic1_*_amd64.deb >/dev/null 2>&1; then
    (cd "$DEST" && apt-get download -oAPT::Architecture=amd64 libmagic1 >/dev/null) \
        || echo "libmagic1 not downloaded (apt-get update first?): the GPU machine must have libmagic" >&2
fi
# The device tool carries 64 MiB in all, repository included: polars' runtime (51 MiB as published)
# is repacked with LZMA (31 MiB; pip installs any zip compression, RECORD hashes the contents).
"$PYTHON" - "$DEST" <<'PY'
import sys, zipfile
from pathlib import Path

for wheel in Path(sys.argv[1]).glob("polars_runtime_32-*.whl"):
    with zipfile.ZipFile(wheel) as source:
        if all(info.compress_type == zipfile.ZIP_LZMA for info in source.infolist()):
            continue
        partial = wheel.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_LZMA) as target:
            for info in source.infolist():
                target.writestr(info, source.read(info), compress_type=zipfile.ZIP_LZMA)
    partial.replace(wheel)
PY
du -cb "$DEST"/* | tail -1 | awk '{printf "%.1f MiB in %s\n", $1 / 1048576, "'"$DEST"'"}'
