"""Start real Atelier processes (Celery worker, Daphne web server) for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from webapp.private_redis import free_port

ROOT = Path(__file__).resolve().parent.parent


def database_url(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL naming the database Django is connected to (e.g. the test database)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user, password = settings_dict.get("USER", ""), settings_dict.get("PASSWORD", "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host, port = settings_dict.get("HOST") or "127.0.0.1", settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        REDIS_URL=settings.REDIS_URL,
        ATELIER_REDIS_PREFIX=settings.ATELIER_REDIS_PREFIX,
        SECRET_KEY=settings.SECRET_KEY,
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def _stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def celery_worker(
    env: dict[str, str], queues: list[str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process (solo pool) consuming `queues`; yields once it is ready."""
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        name = f"test-{os.getpid()}-{free_port()}@%h"
        command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"]
        command += ["--pool", "solo", "--loglevel", "INFO", "-Q", ",".join(queues), "-n", name]
        command += ["--without-mingle", "--without-gossip"]
        worker_env = {**env, "DJANGO_SETTINGS_MODULE": "workers.settings"}  # as the run command's
        process = subprocess.Popen(
            command, cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for(
                lambda: b" ready." in log_path.read_bytes()[start:],
                process,
                log_path,
                "Celery worker",
            )
            yield process
        finally:
            _stop(process)


@contextmanager
def web_server(env: dict[str, str], log_path: Path, port: int | None = None) -> Iterator[str]:
    """A real Daphne process serving the ASGI app; yields its base URL once it answers."""
    port = port or free_port()
    with open(log_path, "ab") as log:
        # As the run command starts it: Daphne with the WebSocket limits of webapp.server.
        command = [sys.executable, "-m", "webapp.server", "-b", "127.0.0.1", "-p", str(port)]
        command.append("webapp.asgi:application")
        web_env = {**env, "DJANGO_SETTINGS_MODULE": "webapp.settings"}  # as the run command's
        process = subprocess.Popen(
            command, cwd=ROOT, env=web_env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for(lambda: _answers(url + "/healthz"), process, log_path, "web server")
            yield url
        finally:
            _stop(process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local test URL
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_for(
    ready: Any, process: subprocess.Popen[bytes], log_path: Path, what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout}s:\n{log_path.read_text()[-3000:]}")


def session_cookie(user: Any) -> str:
    """A logged-in session for `user`, as a Cookie header value."""
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
