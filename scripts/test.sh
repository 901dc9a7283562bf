#!/usr/bin/env bash
# Run the whole test suite (lint, types, tests), doing its own set-up first.
# Extra arguments go to pytest, e.g. scripts/test.sh -k stream -x
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" dev

# Browser tests drive Debian's Chromium; install it when we can.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

export HF_HUB_OFFLINE=1
port_open() { .venv/bin/python -c "import socket,sys; s=socket.socket(); s.settimeout(0.3); sys.exit(s.connect_ex(('127.0.0.1', $1)))"; }
# PostgreSQL when DATABASE_URL names one, else the local server if it answers, else SQLite.
if [ -z "${DATABASE_URL:-}" ] && port_open 5432; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/atelier"
fi
# A real Redis: REDIS_URL, else the local server, else tests start a private one.
if [ -z "${REDIS_URL:-}" ] && port_open 6379; then
  export REDIS_URL="redis://127.0.0.1:6379/9"
fi
echo "database: ${DATABASE_URL:-sqlite}  redis: ${REDIS_URL:-private (started by the tests)}"

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
