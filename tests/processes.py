"""Start real Atelier processes (Celery worker, Daphne web server) for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
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


class PrivatePostgres:
    """A PostgreSQL cluster of a test's own (initdb in a temporary folder, a free port), so
    that a test can stop and start it under running processes; never the shared server.
    Started as the `postgres` user when run as root (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        import glob
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        self.bin = Path(os.environ.get("ATELIER_TEST_PG_BIN") or Path(found[-1]).parent)
        # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
        self.workdir = Path(tempfile.mkdtemp(prefix="atelier-test-postgres-"))
        self.port = free_port()
        self.data = self.workdir / "data"

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, tool: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, **kwargs)

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.workdir / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown, as a restart by an administrator or a service manager does:
        every connection is closed under its client."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def copy_database(self, settings_dict: dict[str, Any], name: str) -> str:
        """A copy of a database of the shared server (e.g. this run's test database, with
        the rows a test made) in this cluster; returns its URL."""
        source = database_url(settings_dict)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        dump = subprocess.run(
            [str(self.bin / "pg_dump"), "--no-owner", "-Fc", source],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        self._run("pg_restore", "--no-owner", "-d", self.url(name), input=dump)
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
