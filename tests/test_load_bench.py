"""bench/load_ws.py --quick end to end, steady and in a burst: its own stack (SQLite, a
private Redis, two Celery workers, Daphne) under 20 WebSocket connections and 5 concurrent
generations. Every stream arrives whole: no lost, duplicated or reordered events, the
streamed text is the stored one, and nothing fails. No timing asserts: the machine decides
those."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("arrival", ["steady", "burst"])
def test_quick_load_run_delivers_every_token_once_in_order(tmp_path: Path, arrival: str) -> None:
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # its own SQLite and private Redis
    command = [sys.executable, str(ROOT / "bench" / "load_ws.py"), "--quick", "--json", str(out)]
    result = subprocess.run(
        [*command, "--arrival", arrival],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.is_file(), f"no figures written:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    args = figures["args"]
    sent = figures["sent"]

    assert figures["error_messages"] == []
    assert figures["errors"] == 0
    assert (figures["lost"], figures["duplicated"], figures["reordered"]) == (0, 0, 0)
    assert figures["text_mismatches"] == 0
    assert figures["generations_done"] == sent
    # No end-of-sequence token: every reply runs to max_tokens.
    assert figures["short_generations"] == []
    assert figures["completion_tokens"] == sent * args["tokens"]
    # Each message's sender reads its stream, and so does every other connection of the
    # same user (they subscribe to it).
    per_user = args["connections"] // args["users"]
    assert figures["streams"] == sent * per_user
    assert figures["subscriber_streams"] == sent * (per_user - 1)
    assert figures["added_ttft"]["n"] == sent
    assert len(figures["samples"]) == sent
    if arrival == "burst":
        assert sent == args["generations"]
        assert figures["in_flight_at_send"]["max"] == args["generations"]
    else:  # each sender keeps one message in flight, sending again when it is done
        assert sent > args["generations"]
        assert figures["in_flight_at_send"]["max"] <= args["generations"]
    assert result.returncode == 0, result.stdout[-3000:]
