#!/usr/bin/env bash
# `make docker-check`: build the worker's image from Dockerfile and run the real job in it, without
# network, on the bundled sample in a detection mode (segment) and the classify mode; check that
# results.tar.zst, metrics.json and model/model.pt came out and that the container wrote nothing
# outside its home and /tmp; print the image size and the times. docs/docker.md explains each step.
#
# Needs root (it installs docker.io and debootstrap with apt when they are missing, and starts
# dockerd when no daemon answers; it stops the daemon it started). Settings, from the environment:
#   IMAGE                  the image built (worker-yolo-training:check)
#   BASE_IMAGE             the base image (worker-yolo-training-base:bookworm, built here with
#                          debootstrap when missing; python:3.11-slim-bookworm where a registry is
#                          reachable)
#   DEBIAN_MIRROR          debootstrap's mirror (http://deb.debian.org/debian)
#   CA_BUNDLE              CA bundle given to the build as a secret, for a re-signing HTTPS proxy
#                          (/etc/ssl/certs/ca-certificates.crt; empty: none)
#   DOCKER_CHECK_EPOCHS    epochs of each run (3; the sample's configurations say 40 and 20)
#   DOCKER_CHECK_OUTPUT    where the runs write (docker-check-output/, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-worker-yolo-training:check}
LOCAL_BASE=worker-yolo-training-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
EPOCHS=${DOCKER_CHECK_EPOCHS:-3}
OUTPUT=$(realpath -m "${DOCKER_CHECK_OUTPUT:-docker-check-output}")
SAMPLE=$PWD/worker_yolo_training/sample
WORKER_UID=2000
# What the container may change in its own filesystem (the task's data volume is a mount)
ALLOWED_WRITES=(/home/worker /tmp)

SCRATCH=$(mktemp -d /tmp/docker-check.XXXXXX)
STARTED_DOCKERD=
INDEX_SERVER=

say() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'docker-check: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
    stop_index_server
    if [[ -n $STARTED_DOCKERD ]]; then
        echo "Stopping the dockerd this script started (pid $STARTED_DOCKERD)"
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
    rm -rf "$SCRATCH"
}
stop_index_server() {
    if [[ -n $INDEX_SERVER ]]; then
        kill "$INDEX_SERVER" 2>/dev/null || true
        wait "$INDEX_SERVER" 2>/dev/null || true
        INDEX_SERVER=
    fi
}
trap cleanup EXIT

apt_install() {
    [[ $(id -u) == 0 ]] || fail "$* missing: install it (apt-get install $*), or run as root"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# A docker CLI that builds with BuildKit: one with the buildx plugin, or a CLI older than 23
# (Debian's docker.io 20.10), whose BuildKit is built in and reads DOCKER_BUILDKIT=1.
find_docker_cli() {
    local cli major
    for cli in ${DOCKER:-} "$(command -v docker || true)" /usr/bin/docker; do
        [[ -x $cli ]] || continue
        if "$cli" buildx version >/dev/null 2>&1; then
            echo "$cli"
            return
        fi
        major=$("$cli" --version | sed -E 's/^Docker version ([0-9]+).*/\1/')
        if ((major < 23)); then
            echo "$cli"
            return
        fi
    done
}

setup_docker() {
    command -v dockerd >/dev/null || apt_install docker.io iptables
    DOCKER=$(find_docker_cli)
    [[ -n $DOCKER ]] || fail "no docker CLI with BuildKit: install docker.io or the buildx plugin"
    export DOCKER_BUILDKIT=1
    if ! "$DOCKER" info >/dev/null 2>&1; then
        echo "No Docker daemon answers: starting dockerd (log: $SCRATCH/dockerd.log)"
        dockerd >"$SCRATCH/dockerd.log" 2>&1 &
        STARTED_DOCKERD=$!
        for _ in $(seq 60); do
            "$DOCKER" info >/dev/null 2>&1 && break
            kill -0 "$STARTED_DOCKERD" 2>/dev/null || fail "dockerd exited: $(tail -5 "$SCRATCH/dockerd.log")"
            sleep 1
        done
        "$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s"
    fi
    echo "docker: $("$DOCKER" --version) (CLI $DOCKER), daemon $("$DOCKER" info --format '{{.ServerVersion}}')"
}

# Debian bookworm (Python 3.11) from its mirror, imported as an image: no registry needed.
build_base_image() {
    command -v debootstrap >/dev/null || apt_install debootstrap
    local rootfs=$SCRATCH/rootfs
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$SCRATCH/debootstrap.log" 2>&1 \
        || fail "debootstrap failed: $(tail -5 "$SCRATCH/debootstrap.log")"
    # The sources of Debian's own images; no package cache or lists in the image
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . \
        | "$DOCKER" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# Where this host's pip finds wheels on disk (torch, torchvision: `pip config list`, e.g.
# find-links and file:// indexes), served on 127.0.0.1 for the build, which reaches them with
# --network host; their pip configuration goes in as the `pipconf` secret.
serve_local_indexes() {
    local python port
    python=$(command -v python3)
    [[ -x .venv/bin/python ]] && python=.venv/bin/python
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$python" - "$SCRATCH/indexes" "$port" >"$SCRATCH/pip.conf" <<'PY' || return 0
import re, subprocess, sys
from pathlib import Path

served, port = Path(sys.argv[1]), sys.argv[2]
listed = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
).stdout
values = {}
for line in listed.splitlines():
    key, _, value = line.partition("=")
    values.setdefault(key.rsplit(".", 1)[-1], []).extend(value.strip("'\"").split())
exposed = []


def url(location: str, index: bool) -> str:
    """The served URL of a local folder (its pip URL unchanged when it is not local). A folder
    is served at its own path; an index with its parent, where its pages' relative links go."""
    path = location.removeprefix("file://")
    if re.match(r"^[a-z+]+://", path) or not Path(path).is_dir():
        return location
    path = Path(path).resolve()
    root = path.parent if index else path
    if not any(root.is_relative_to(done) for done in exposed):
        exposed.append(root)
        (served / root.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        (served / root.relative_to("/")).symlink_to(root)
    return f"http://127.0.0.1:{port}{path}/"


indexes = [url(value, True) for value in dict.fromkeys(values.get("extra-index-url", []))]
links = [url(value, False) for value in dict.fromkeys(values.get("find-links", []))]
if not exposed:
    sys.exit(1)
for root in exposed:
    print(f"# served: {root}")
print("[global]")
print("extra-index-url =", " ".join(indexes))
if links:
    print("find-links =", " ".join(links))
print(f"trusted-host = 127.0.0.1:{port}")
PY
    [[ -d $SCRATCH/indexes ]] || return 0
    "$python" -m http.server --bind 127.0.0.1 --directory "$SCRATCH/indexes" "$port" \
        >"$SCRATCH/index-server.log" 2>&1 &
    INDEX_SERVER=$!
    for _ in $(seq 20); do
        "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" \
            2>/dev/null && return 0
        sleep 0.5
    done
    fail "the local wheel index did not start: $(cat "$SCRATCH/index-server.log")"
}

build_image() {
    local args=(--network host --progress plain --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE")
    [[ -n $CA_BUNDLE ]] && args+=(--secret "id=ca,src=$CA_BUNDLE")
    [[ -n $INDEX_SERVER ]] && args+=(--secret "id=pipconf,src=$SCRATCH/pip.conf")
    "$DOCKER" build "${args[@]}" . >"$OUTPUT/build.log" 2>&1 \
        || fail "the build failed: $(tail -30 "$OUTPUT/build.log")"
}

# The CA bundle went in as a secret: no file of any layer has its content, no history line names it.
check_ca_absent() {
    [[ -n $CA_BUNDLE ]] || return 0
    local size layers found=0 dir file
    size=$(stat -c %s "$CA_BUNDLE")
    if "$DOCKER" history --no-trunc "$IMAGE" | grep -q -e "$(basename "$CA_BUNDLE")" -e BEGIN.CERTIFICATE; then
        fail "the image history names the CA bundle"
    fi
    if [[ $("$DOCKER" image inspect -f '{{.GraphDriver.Name}}' "$IMAGE") != overlay2 ]]; then
        echo "CA bundle: history clean; layers not scanned (storage driver is not overlay2)"
        return 0
    fi
    layers=$("$DOCKER" image inspect -f '{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}' "$IMAGE")
    IFS=: read -r -a dirs <<<"$layers"
    for dir in "${dirs[@]}"; do
        while IFS= read -r -d '' file; do
            cmp -s "$file" "$CA_BUNDLE" && found=1 && echo "CA bundle found in a layer: $file"
        done < <(find "$dir" -type f -size "${size}c" -print0)
    done
    ((found == 0)) || fail "the CA bundle is in the image"
    echo "CA bundle: in no layer (${#dirs[@]} layers scanned) and not in the history"
}

# The job as Arkindex would run it, but local (--dev, a SQLite export, the images from a folder),
# offline, as the image's user, with the sample read-only and the data volume at /data.
run_mode() {
    local name=$1 config=$2 container=worker-yolo-training-check-$1 started output
    sed -E "s/^num_epochs: .*/num_epochs: $EPOCHS/" "$SAMPLE/$config" >"$OUTPUT/$config"
    rm -rf "${OUTPUT:?}/$name"
    "$DOCKER" rm -f "$container" >/dev/null 2>&1 || true
    say "$name: worker-yolo-training --dev in the container ($EPOCHS epochs, --network none)"
    started=$(now)
    "$DOCKER" run --name "$container" --network none --shm-size 2g \
        -v "$SAMPLE:/sample:ro" -v "$OUTPUT:/data" "$IMAGE" \
        worker-yolo-training --dev --database /sample/export.sqlite --images /sample/images \
        --config "/data/$config" --output "/data/$name" >"$OUTPUT/$name.log" 2>&1 \
        || fail "$name: the run failed: $(tail -30 "$OUTPUT/$name.log")"
    RUN_TIME[$name]=$(since "$started")
    output=$OUTPUT/$name
    for file in results.tar.zst metrics.json model/model.pt; do
        [[ -s $output/$file ]] || fail "$name: $file is missing in $output"
        echo "  $file: $(stat -c %s "$output/$file") bytes, owner uid $(stat -c %u "$output/$file")"
    done
    check_writes "$container" "$name"
    "$DOCKER" rm "$container" >/dev/null
}

# `docker diff` (kept in OUTPUT/<mode>.diff): every path the container added, changed or deleted
# outside its mounts; the mount points themselves are Docker's (it creates /sample for the bind
# mount).
check_writes() {
    local kind path allowed ok bad=() mounts
    read -r -a mounts <<<"$("$DOCKER" inspect -f '{{range .Mounts}}{{.Destination}} {{end}}' "$1")"
    while read -r kind path; do
        ok=
        for allowed in "${ALLOWED_WRITES[@]}"; do
            # under an allowed folder, or a parent of one (listed as changed)
            [[ $path == "$allowed" || $path == "$allowed"/* ]] && ok=1
            [[ $kind == C && $allowed == "$path"/* ]] && ok=1
        done
        for allowed in "${mounts[@]}"; do
            [[ $path == "$allowed" ]] && ok=1
        done
        [[ -n $ok ]] || bad+=("$kind $path")
    done < <("$DOCKER" diff "$1" | tee "$OUTPUT/$2.diff")
    ((${#bad[@]} == 0)) || fail "the container wrote outside ${ALLOWED_WRITES[*]}: ${bad[*]}"
    echo "  container filesystem: changes only under ${ALLOWED_WRITES[*]} (and the mount points ${mounts[*]})"
}

mkdir -p "$OUTPUT"
chown "$WORKER_UID:$WORKER_UID" "$OUTPUT"
declare -A RUN_TIME
setup_docker

say "Base image $BASE_IMAGE"
if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "present"
    BASE_TIME=present
elif [[ $BASE_IMAGE == "$LOCAL_BASE" ]]; then
    echo "missing: debootstrap Debian bookworm from $DEBIAN_MIRROR"
    started=$(now)
    build_base_image
    BASE_TIME="built in $(since "$started") s"
    echo "$BASE_TIME"
else
    echo "missing: the build pulls it"
    BASE_TIME=pulled
fi

say "Image $IMAGE (log: $OUTPUT/build.log)"
serve_local_indexes
[[ -n $INDEX_SERVER ]] && sed -n 's/^# served: /  local wheels served to the build: /p' "$SCRATCH/pip.conf"
started=$(now)
build_image
BUILD_TIME=$(since "$started")
stop_index_server
echo "built in $BUILD_TIME s"
check_ca_absent
user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")
uid=$("$DOCKER" run --rm --network none "$IMAGE" id -u)
[[ $uid == "$WORKER_UID" ]] || fail "the container runs as uid $uid, not $WORKER_UID"
echo "runs as user $user (uid $uid)"

run_mode segment config.yml
run_mode classify config-classify.yml

size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
say "docker-check passed"
printf '  image %s: %.2f GB (%s bytes), base %s\n' "$IMAGE" "$(awk -v s="$size" 'BEGIN { print s / 1e9 }')" "$size" "$BASE_IMAGE"
printf '  base image: %s; image build: %s s\n' "$BASE_TIME" "$BUILD_TIME"
for name in segment classify; do
    printf '  %s run in the container (%s epochs): %s s\n' "$name" "$EPOCHS" "${RUN_TIME[$name]}"
done
echo "  outputs and logs: $OUTPUT"
