#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml: the newest releases it allows, every
# version pinned with its hashes. Review the diff, run `bash scripts/test.sh`, commit both.
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
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages pinned"
