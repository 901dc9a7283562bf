"""bench/load_ws.py --quick end to end: its own stack (SQLite, a private Redis, two Celery
workers, Daphne) under 20 WebSocket connections and 5 concurrent generations. Every stream
arrives whole: no lost, duplicated or reordered events, the streamed text is the stored
one, and nothing fails. No timing asserts: the machine decides those."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_quick_load_run_delivers_every_token_once_in_order(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # its own SQLite and private Redis
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load_ws.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.is_file(), f"no figures written:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    args = figures["args"]

    assert figures["error_messages"] == []
    assert figures["errors"] == 0
    assert (figures["lost"], figures["duplicated"], figures["reordered"]) == (0, 0, 0)
    assert figures["text_mismatches"] == 0
    assert figures["generations_done"] == args["generations"]
    # No end-of-sequence token: every reply runs to max_tokens.
    assert figures["short_generations"] == []
    assert figures["completion_tokens"] == args["generations"] * args["tokens"]
    # Each user sends one message; the user's other connections subscribe to it.
    assert figures["streams"] == args["connections"]
    assert figures["subscriber_streams"] == args["connections"] - args["generations"]
    assert figures["added_ttft"]["n"] == args["generations"]
    assert result.returncode == 0, result.stdout[-3000:]
