#!/usr/bin/env bash
# Set up (idempotent) and start the service on http://localhost:8000 .
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/football-realtime serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
