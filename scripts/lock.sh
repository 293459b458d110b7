#!/usr/bin/env bash
# Refresh the lock files from pyproject.toml: the newest releases it allows, every
# version pinned with its hashes. Review the diff, run `bash scripts/test.sh`, commit them.
#
#   requirements.lock          runtime + test extras: the venv of setup.sh and CI
#   requirements-runtime.lock  runtime only, plus the build backend (setuptools, wheel):
#                              what deploy/Dockerfile installs; constrained to the versions
#                              of requirements.lock, so both locks always agree
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv-tools/bin/uv ]; then
  "$PY" -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q uv
fi
# --native-tls: use the system's certificate store (as pip does) for the index.
.venv-tools/bin/uv pip compile pyproject.toml --extra test --generate-hashes \
  --python-version 3.11 --native-tls --quiet "$@" -o requirements.lock
# The image installs the package with --no-build-isolation, so its build backend comes
# from this lock too (read from stdin: pyproject.toml names it only in [build-system]).
printf 'setuptools>=68\nwheel\n' |
  .venv-tools/bin/uv pip compile pyproject.toml - -c requirements.lock --generate-hashes \
    --python-version 3.11 --native-tls --quiet \
    --custom-compile-command "bash scripts/lock.sh" -o requirements-runtime.lock
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages pinned"
echo "requirements-runtime.lock: $(grep -c '^[a-z0-9]' requirements-runtime.lock) packages pinned"
