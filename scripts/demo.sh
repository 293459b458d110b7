#!/usr/bin/env bash
# Set up (idempotent), build the dashboard, and run the demo: the service, simulated
# football services and the live dashboard on http://localhost:8000/ .
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if command -v npm >/dev/null 2>&1; then
  # Same bytes as the committed build unless the dashboard's sources changed.
  (cd dashboard && npm run --silent build >/dev/null)
fi
exec .venv/bin/football-realtime demo --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
