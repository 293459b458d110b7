#!/usr/bin/env bash
# Local base images for deploy/Dockerfile and the container tests, for machines where no
# image registry is reachable (`FROM python:3.11-slim` cannot be pulled) but Debian's
# package archive is. Elsewhere you do not need this: `docker build -f deploy/Dockerfile .`
# uses the official python and node images.
#
#   football-realtime-base/python:3.11-bookworm  Debian 12 minbase + python3 (3.11),
#                                                python3-venv, ca-certificates, upgraded
#                                                from bookworm-updates and -security;
#                                                stands in for python:3.11-slim-bookworm
#   football-realtime-base/node:<N>-bookworm     the same + this machine's Node.js N and
#                                                npm; stands in for node:N-bookworm-slim
#   football-realtime-base/infra:bookworm        the same + Debian's redis-server and nginx,
#                                                for the three-replica test (image-test.sh)
#
# Made with debootstrap from the Debian mirror this machine's apt uses, then `docker import`.
# Cached: nothing is done while all three exist with this script's recipe label (a change
# to this script, to the mirror or to the Node.js version rebuilds them; FRT_REBUILD_BASES=1
# forces it). Making them needs root (debootstrap, chroot): exit status 3 without it.
# Prints the image names on stdout, one per line (progress goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-lib.sh
. scripts/docker-lib.sh

SUITE=bookworm
PYTHON_BASE=football-realtime-base/python:3.11-$SUITE
INFRA_BASE=football-realtime-base/infra:$SUITE
LABEL=org.football-realtime.base-recipe

log() { echo "docker-bases: [${SECONDS}s] $*" >&2; }
die() { log "$*"; exit 1; }

if ! frt_engine_up; then
  die "$FRT_DOCKER_WHY"
fi
trap frt_engine_down EXIT

NODE_BIN=$(readlink -f "$(command -v node 2>/dev/null || echo /nonexistent)")
[ -x "$NODE_BIN" ] || die "Node.js is not installed (bash scripts/setup.sh installs it)"
NODE_VERSION=$("$NODE_BIN" --version)
NODE_MAJOR=${NODE_VERSION#v}
NODE_MAJOR=${NODE_MAJOR%%.*}
[ "$NODE_MAJOR" -ge 20 ] || die "Node.js $NODE_VERSION is too old (clients/js needs >= 20)"
NPM_DIR=$(readlink -f "$(npm root -g)/npm")
[ -f "$NPM_DIR/bin/npm-cli.js" ] || die "npm not found next to node ($NPM_DIR)"
NODE_BASE=football-realtime-base/node:$NODE_MAJOR-$SUITE

# The Debian mirrors this machine's apt uses: "<suite> <uri>" per line, from one-line
# (sources.list) and deb822 (*.sources) files.
apt_uris() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                       print $(i + 1), $i }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/) { n = split(suites, s, " ");
                                for (k = 1; k <= n; k++) print s[k], uri }
                            types = suites = uri = "" }
         /^[ \t]*$/ { flush(); next }
         /^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
         /^URIs:/   { sub(/^URIs:[ \t]*/, ""); split($0, u, " "); uri = u[1] }
         /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
         END { flush() }' "$f"
  done
}
mirror_for() { apt_uris | awk -v s="$1" '$1 == s { print $2; exit }'; }
MIRROR=${FRT_DEBIAN_MIRROR:-$(mirror_for "$SUITE")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${FRT_DEBIAN_SECURITY_MIRROR:-$(mirror_for "$SUITE-security")}
SECURITY=${SECURITY:-${MIRROR%/debian}/debian-security}
# A snapshot mirror's Release files may be past their Valid-Until; follow this machine's apt.
APT_OPTS=()
if apt-config dump 2>/dev/null | grep -q '^Acquire::Check-Valid-Until "false"'; then
  APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
fi

RECIPE=$(
  {
    cat "$0"
    echo "$MIRROR $SECURITY $NODE_VERSION"
  } | sha256sum | cut -c1-16
)
have() { [ "$("$DOCKER" image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$RECIPE" ]; }

if [ "${FRT_REBUILD_BASES:-0}" != 1 ] && have "$PYTHON_BASE" && have "$NODE_BASE" && have "$INFRA_BASE"; then
  log "cached (recipe $RECIPE)"
  printf '%s\n' "$PYTHON_BASE" "$NODE_BASE" "$INFRA_BASE"
  exit 0
fi

if ! frt_is_root; then
  log "the base images are missing and making them needs root (debootstrap, chroot)"
  exit 3
fi
frt_apt_install debootstrap || die "cannot install debootstrap"
ROOT=$(mktemp -d /var/tmp/frt-rootfs.XXXXXX)
chmod 755 "$ROOT" # apt's _apt user downloads into it
STEPLOG=$ROOT.log
cleanup() {
  local m
  for m in dev/pts dev proc sys; do
    if mountpoint -q "$ROOT/$m" 2>/dev/null; then umount -l "$ROOT/$m" || true; fi
  done
  rm -rf --one-file-system "$ROOT" "$STEPLOG"
  frt_engine_down
}
trap cleanup EXIT
started=$SECONDS

# Run a step with its output in $STEPLOG, shown only when it fails.
quiet() {
  "$@" >"$STEPLOG" 2>&1 || die "failed: $*; last lines of its output:
$(tail -n 15 "$STEPLOG")"
}
in_root() { quiet chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

log "debootstrap $SUITE from $MIRROR into $ROOT"
quiet debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOT" "$MIRROR"
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
# Packages must not try to start services in the chroot or in containers (as in Docker's
# official Debian images, the file stays).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
in_root apt-get "${APT_OPTS[@]}" update
in_root apt-get "${APT_OPTS[@]}" -y upgrade
log "upgraded from $SUITE-updates and $SUITE-security"

# Left out of every image: documentation, translations, logs, and (by import's tar
# excludes) apt's package lists and downloads, as in Docker's official slim images.
tidy() {
  rm -rf "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
    "$ROOT"/usr/share/locale/* "$ROOT"/var/cache/debconf/*-old "$ROOT"/tmp/* "$ROOT"/root/.cache
  find "$ROOT/var/log" -type f -delete
  : >"$ROOT/etc/resolv.conf" # Docker provides its own at run time
}
import() { # $1: image name; the rest: extra --change lines
  local name=$1 old
  shift
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)
  tar -C "$ROOT" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' -cf - . |
    "$DOCKER" import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change "LABEL $LABEL=$RECIPE" \
      "$@" - "$name" >/dev/null
  # The previous build of this base, unless an image built on it still uses it.
  if [ -n "$old" ] && [ "$old" != "$("$DOCKER" image inspect -f '{{.Id}}' "$name")" ]; then
    "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
  fi
  log "imported $name ($("$DOCKER" image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

tidy
import "$PYTHON_BASE" --change 'CMD ["python3"]'

mkdir -p "$ROOT/usr/local/lib/node_modules"
cp -a "$NODE_BIN" "$ROOT/usr/local/bin/node"
cp -a "$NPM_DIR" "$ROOT/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/local/bin/npx"
import "$NODE_BASE" --change 'CMD ["node"]'
"$DOCKER" run --rm --network none "$NODE_BASE" npm --version >/dev/null ||
  die "the copied Node.js does not run in the Debian $SUITE image"
rm -rf "$ROOT/usr/local/bin/node" "$ROOT/usr/local/bin/npm" "$ROOT/usr/local/bin/npx" \
  "$ROOT/usr/local/lib/node_modules"

cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
in_root apt-get "${APT_OPTS[@]}" install -y --no-install-recommends redis-server nginx
rm -f "$ROOT/etc/nginx/sites-enabled/default" # the test's server block is the only one
tidy
import "$INFRA_BASE" --change 'CMD ["bash"]'

log "made in $((SECONDS - started)) s (recipe $RECIPE)"
printf '%s\n' "$PYTHON_BASE" "$NODE_BASE" "$INFRA_BASE"
