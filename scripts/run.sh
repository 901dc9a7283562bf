#!/usr/bin/env bash
# Run Atelier: web server, one worker, and (unless REDIS_URL is set) a private Redis.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/python -m webapp.launcher
