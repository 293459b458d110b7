# Sourced by scripts/docker-bases.sh and scripts/image-test.sh (not run on its own).
#
# frt_engine_up: find a Docker CLI that builds with BuildKit and make sure a Docker engine
# answers it. As root on Debian it installs the `docker.io` package when something is
# missing and starts `dockerd` when none runs (its log: $FRT_DOCKERD_LOG). Sets DOCKER
# (the CLI to use). Returns 1 with the reason in FRT_DOCKER_WHY when it cannot.
# frt_engine_down: stops the dockerd that frt_engine_up started, if any (FRT_KEEP_DOCKERD=1
# keeps it running; images and build cache stay on disk either way).
#
# Why a particular CLI: deploy/Dockerfile needs BuildKit (the per-Dockerfile
# deploy/Dockerfile.dockerignore and `RUN --mount=type=secret`). A CLI from Docker 23 or
# later needs the buildx plugin for that; Debian's docker.io (20.10) has BuildKit built in
# (DOCKER_BUILDKIT=1). A CLI of 23+ without buildx is skipped.

FRT_DOCKERD_LOG=${FRT_DOCKERD_LOG:-/var/log/football-realtime-dockerd.log}
FRT_DOCKERD_PID=""
FRT_DOCKER_WHY=""
export DOCKER_BUILDKIT=1

frt_is_root() { [ "$(id -u)" = 0 ]; }

# $1: a docker CLI. True if it can run BuildKit builds.
frt_docker_cli_ok() {
  local c=$1 major
  [ -n "$c" ] && [ -x "$c" ] || return 1
  "$c" buildx version >/dev/null 2>&1 && return 0
  major=$("$c" --version 2>/dev/null | sed -n 's/^Docker version \([0-9][0-9]*\)\..*/\1/p')
  [ -n "$major" ] && [ "$major" -lt 23 ]
}

frt_pick_docker() {
  local c
  for c in "${DOCKER:-}" "$(command -v docker 2>/dev/null || true)" /usr/bin/docker /usr/local/bin/docker; do
    if frt_docker_cli_ok "$c"; then
      DOCKER=$c
      return 0
    fi
  done
  return 1
}

frt_apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    # installed, not merely known (a removed package keeps its config files)
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  frt_is_root && command -v apt-get >/dev/null 2>&1 || return 1
  echo "docker: installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

frt_engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

frt_engine_up() {
  if frt_pick_docker && frt_engine_answers; then
    return 0
  fi
  if ! frt_is_root; then
    if frt_pick_docker; then
      FRT_DOCKER_WHY="no Docker engine answers ($DOCKER info fails) and this is not root, so none can be started"
    else
      FRT_DOCKER_WHY="no Docker CLI with BuildKit (a CLI before 23.0, or one with the buildx plugin) and this is not root, so docker.io cannot be installed"
    fi
    return 1
  fi
  if ! frt_pick_docker || ! command -v dockerd >/dev/null 2>&1; then
    # apparmor: docker.io recommends it; without its parser dockerd cannot start
    # containers on a kernel with AppArmor enabled. (No other recommends: needrestart
    # would hook into every later apt run.)
    if ! frt_apt_install docker.io apparmor; then
      FRT_DOCKER_WHY="no usable Docker here and apt-get could not install docker.io"
      return 1
    fi
    hash -r
    if ! frt_pick_docker; then
      FRT_DOCKER_WHY="docker.io is installed but no Docker CLI with BuildKit was found"
      return 1
    fi
  fi
  frt_engine_answers && return 0
  if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != unix:///var/run/docker.sock ]; then
    FRT_DOCKER_WHY="DOCKER_HOST=$DOCKER_HOST does not answer (only the local default socket is started here)"
    return 1
  fi
  # One starter at a time (two runs at once must not start two daemons).
  local lock=/run/lock/football-realtime-dockerd.lock fd
  mkdir -p /run/lock
  exec {fd}>"$lock"
  flock -w 120 "$fd" || true
  if ! frt_engine_answers; then
    echo "docker: starting dockerd (log: $FRT_DOCKERD_LOG)" >&2
    # Its own session: a Ctrl-C of this script must not take the engine down before
    # the cleanup trap has removed the containers.
    setsid dockerd >>"$FRT_DOCKERD_LOG" 2>&1 </dev/null &
    FRT_DOCKERD_PID=$!
    local deadline=$((SECONDS + 60))
    until frt_engine_answers; do
      if ! kill -0 "$FRT_DOCKERD_PID" 2>/dev/null; then
        FRT_DOCKER_WHY="dockerd exited at start; last lines of $FRT_DOCKERD_LOG: $(tail -n 5 "$FRT_DOCKERD_LOG" | tr '\n' ' ')"
        FRT_DOCKERD_PID=""
        flock -u "$fd"
        return 1
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        FRT_DOCKER_WHY="dockerd did not answer within 60 s (log: $FRT_DOCKERD_LOG)"
        flock -u "$fd"
        return 1
      fi
      sleep 0.5
    done
    echo "docker: dockerd $FRT_DOCKERD_PID answers" >&2
  fi
  flock -u "$fd"
  return 0
}

frt_engine_down() {
  [ -n "$FRT_DOCKERD_PID" ] || return 0
  if [ "${FRT_KEEP_DOCKERD:-0}" = 1 ]; then
    echo "docker: leaving dockerd $FRT_DOCKERD_PID running (FRT_KEEP_DOCKERD=1)" >&2
    return 0
  fi
  kill -TERM "$FRT_DOCKERD_PID" 2>/dev/null || return 0
  local deadline=$((SECONDS + 30))
  while kill -0 "$FRT_DOCKERD_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
  done
  if kill -0 "$FRT_DOCKERD_PID" 2>/dev/null; then
    echo "docker: dockerd $FRT_DOCKERD_PID did not stop in 30 s; killing it" >&2
    kill -KILL "$FRT_DOCKERD_PID" 2>/dev/null || true
  else
    echo "docker: stopped dockerd $FRT_DOCKERD_PID (started by this run)" >&2
  fi
  FRT_DOCKERD_PID=""
}
