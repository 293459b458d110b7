#!/usr/bin/env bash
# Set up a fresh machine for football-realtime: Python venv with the package and test
# tools, system packages the tests need, and the JavaScript packages. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# System packages used by the test suite (see docs/deployment.md for production).
if command -v apt-get >/dev/null 2>&1; then
  # redis-server and nginx: the scale-out tests start their own on free ports.
  apt_install redis-server nginx ${SYSTEM_PACKAGES:-}
  # kubectl: tests/test_deploy.py renders deploy/k8s with `kubectl kustomize`.
  command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client
fi

# The demo's dashboard: Node.js for its build and tests, Debian's Chromium for the
# end-to-end test (CJK fonts so screenshots show the Chinese labels).
if command -v apt-get >/dev/null 2>&1; then
  apt_install chromium fonts-noto-cjk
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
fi
# npm packages of the TypeScript client and the dashboard (which links the client
# from ../clients/js and bundles its build).
if command -v npm >/dev/null 2>&1; then
  for dir in clients/js dashboard; do
    [ -f "$dir/package-lock.json" ] || continue
    if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
       [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
  if [ -f clients/js/package.json ]; then
    npm --prefix clients/js run --silent build
  fi
fi

# Python: exactly the versions in requirements.lock (with hashes), then the package
# itself. REALTIME_VENV and REALTIME_LATEST=1 are for `scripts/test.sh --latest`, which
# installs the newest releases pyproject.toml allows into a separate venv instead.
VENV=${REALTIME_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ "${REALTIME_LATEST:-0}" = 1 ]; then
  "$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
else
  stamp="$VENV/.requirements.lock.sha256"
  want=$(sha256sum requirements.lock | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --require-hashes -r requirements.lock
    echo "$want" > "$stamp"
  fi
  # --no-build-isolation: setuptools and wheel come from the lock, not the index.
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
fi
