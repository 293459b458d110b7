#!/usr/bin/env bash
# Set up (idempotent) and run every test: lint, types, Python tests, JavaScript tests, and
# the container image (built and run with Docker; skipped, saying why, where no engine can
# be started, never under CI=true).
#
#   bash scripts/test.sh            the pinned versions of requirements.lock (CI)
#   bash scripts/test.sh --latest   the newest releases pyproject.toml allows, in .venv-latest:
#                                   shows upstream drift on our schedule (not part of CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--latest" ]; then
  shift
  export REALTIME_VENV=.venv-latest REALTIME_LATEST=1
fi
VENV=${REALTIME_VENV:-.venv}
bash scripts/setup.sh

echo "== ruff"
"$VENV"/bin/ruff format --check src tests
"$VENV"/bin/ruff check src tests
echo "== mypy --strict"
"$VENV"/bin/mypy
echo "== lint-imports (layer contracts in pyproject.toml)"
"$VENV"/bin/lint-imports --no-cache
echo "== dashboard: tsc, vitest"
(cd dashboard && npx tsc --noEmit && npx vitest run)
echo "== pytest"
"$VENV"/bin/python -m pytest -q "$@"
echo "== clients/js (vitest: unit, integration against the real server, React hooks)"
(cd clients/js && REALTIME_PYTHON="$PWD/../../$VENV/bin/python" npm test)
echo "== container image: build deploy/Dockerfile, one container, three replicas behind nginx (scripts/image-test.sh)"
bash scripts/image-test.sh
