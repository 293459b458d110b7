#!/usr/bin/env bash
# Set up (idempotent) and run every test: lint, types, Python tests, JavaScript tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff"
.venv/bin/ruff format --check src tests
.venv/bin/ruff check src tests
echo "== mypy --strict"
.venv/bin/mypy
echo "== dashboard: tsc, vitest"
(cd dashboard && npx tsc --noEmit && npx vitest run)
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
echo "== clients/js (vitest: unit, integration against the real server, React hooks)"
(cd clients/js && npm test)
