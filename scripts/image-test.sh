#!/usr/bin/env bash
# Build the image from deploy/Dockerfile and prove it with real containers:
#   1. a Docker engine: Debian's docker.io, installed and its dockerd started when this
#      is root and none runs (scripts/docker-lib.sh); otherwise this test is skipped,
#      saying why, except under CI (CI=true), where it fails instead
#   2. local base images (scripts/docker-bases.sh; cached: made only when missing)
#   3. docker build -f deploy/Dockerfile (BuildKit), timed, with this machine's CA bundle
#      as a build secret (never in the image) and its package index settings
#   4. tests/container_checks.py: one container (--read-only, health, WebSocket, uid,
#      HEALTHCHECK, docker stop -> 1012), then Redis + three replicas + nginx on a
#      user-defined network (cross-instance delivery, kill and drain, recovery)
# Published ports are on 127.0.0.1 only; every container of the run is removed on exit.
# Logs: artifacts/image-test/ (build log, each container's log).
#
#   bash scripts/image-test.sh
#   REALTIME_IMAGE_TEST=skip bash scripts/image-test.sh   skip it on purpose (not under CI)
#   FRT_KEEP_DOCKERD=1                                    leave a dockerd started here running
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-lib.sh
. scripts/docker-lib.sh
VENV=${REALTIME_VENV:-.venv}
LOGS=artifacts/image-test

skip() {
  if [ "${CI:-}" = true ]; then
    echo "image-test: FAILED: $1 (under CI this test must run, not be skipped)"
    exit 1
  fi
  echo "image-test: SKIPPED: $1"
  exit 0
}

if [ "${REALTIME_IMAGE_TEST:-}" = skip ]; then
  skip "REALTIME_IMAGE_TEST=skip"
fi
frt_engine_up || skip "$FRT_DOCKER_WHY"
echo "image-test: docker CLI $DOCKER ($("$DOCKER" --version)), engine $("$DOCKER" version -f '{{.Server.Version}}')"

RUN_ID=$(date +%H%M%S)-$$
cleanup() {
  local ids nets
  ids=$("$DOCKER" ps -aq --filter "label=football-realtime.image-test=$RUN_ID" 2>/dev/null || true)
  [ -z "$ids" ] || "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
  nets=$("$DOCKER" network ls -q --filter "label=football-realtime.image-test=$RUN_ID" 2>/dev/null || true)
  [ -z "$nets" ] || "$DOCKER" network rm $nets >/dev/null 2>&1 || true
  frt_engine_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$VENV/bin/python" ] || bash scripts/setup.sh
rm -rf "$LOGS"
mkdir -p "$LOGS"

# -- base images
t0=$SECONDS
rc=0
bases=$(bash scripts/docker-bases.sh) || rc=$?
[ "$rc" != 3 ] || skip "the local base images are missing and only root can make them"
[ "$rc" = 0 ] || { echo "image-test: FAILED: scripts/docker-bases.sh (exit $rc)"; exit 1; }
mapfile -t BASES <<<"$bases"
PYTHON_BASE=${BASES[0]} NODE_BASE=${BASES[1]} INFRA_BASE=${BASES[2]}
echo "image-test: base images ready in $((SECONDS - t0)) s: ${BASES[*]}"

# -- build
IMAGE=$("$VENV/bin/python" -m tests.container_checks --print-image)
BUILD=(-f deploy/Dockerfile -t "$IMAGE"
  --build-arg "PYTHON_IMAGE=$PYTHON_BASE" --build-arg "NODE_IMAGE=$NODE_BASE")
# TLS to the package indexes may pass through this machine's own certificate authority:
# hand its bundle to the build as a secret (mounted only in the RUN steps that download).
CA=${FRT_BUILD_CA:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
[ ! -s "$CA" ] || BUILD+=(--secret "id=ca,src=$CA")
# Package indexes configured here (only http(s) ones: file:// paths do not exist inside).
pip_index=${PIP_INDEX_URL:-$("$VENV/bin/python" -m pip config get global.index-url 2>/dev/null || true)}
case "$pip_index" in http://* | https://*) BUILD+=(--build-arg "PIP_INDEX_URL=$pip_index") ;; esac
npm_registry=$(npm config get registry 2>/dev/null || true)
case "$npm_registry" in http://* | https://*) BUILD+=(--build-arg "NPM_CONFIG_REGISTRY=$npm_registry") ;; esac

old=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
echo "image-test: DOCKER_BUILDKIT=1 $DOCKER build ${BUILD[*]} ."
t0=$(date +%s.%N)
if ! "$DOCKER" build --progress=plain "${BUILD[@]}" . >"$LOGS/build.log" 2>&1; then
  tail -n 40 "$LOGS/build.log"
  echo "image-test: FAILED: docker build (full log: $LOGS/build.log)"
  exit 1
fi
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cached=$(grep -c '^#[0-9]* CACHED' "$LOGS/build.log" || true)
new=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')
echo "image-test: built $IMAGE in $took s ($cached steps from the build cache), $size"
# The previous build of this tag, now untagged (only ours: the id we replaced).
if [ -n "$old" ] && [ "$old" != "$new" ]; then "$DOCKER" rmi "$old" >/dev/null 2>&1 || true; fi

# -- containers
"$VENV/bin/python" -m tests.container_checks --docker "$DOCKER" --image "$IMAGE" \
  --infra "$INFRA_BASE" --run-id "$RUN_ID" --logs "$LOGS"
