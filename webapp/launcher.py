"""`python -m webapp.launcher`: run the whole of Atelier on this machine.

Starts a private Redis unless REDIS_URL is set, migrates, prepares the starter models,
creates the first admin, then runs the ASGI web server (Daphne) and one Celery worker
until Ctrl-C, which stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from webapp.operations import folder as metrics_folder
from webapp.private_redis import PrivateRedis

BASE_DIR = Path(__file__).resolve().parent.parent
WEB_SETTINGS = "webapp.settings"  # Daphne: never imports the workers
WORKER_SETTINGS = "workers.settings"  # manage.py commands and the Celery worker


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Explicit handlers: a launcher started in the background (or by a service manager)
    # may inherit an ignored SIGINT, and SIGTERM should stop everything too.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    var_dir = Path(os.environ.get("ATELIER_VAR_DIR", BASE_DIR / "var"))
    var_dir.mkdir(parents=True, exist_ok=True)
    metrics_folder.prepare(var_dir)  # shared by every child for /metrics, emptied at start
    key_file = var_dir / "secret_key"
    if not os.environ.get("SECRET_KEY") and not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)

    private = None
    if not os.environ.get("REDIS_URL"):
        private = PrivateRedis(var_dir / "redis")
        os.environ["REDIS_URL"] = private.start()
        print(f"Started a private Redis at {os.environ['REDIS_URL']}", flush=True)

    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        steps = (
            ["migrate", "--no-input", "-v", "0"],
            ["collectstatic", "--no-input", "-v", "0"],
            ["prepare_models"],
            ["ensure_admin"],
        )
        for step in steps:
            subprocess.run(manage + step, check=True, cwd=BASE_DIR, env=_env(WORKER_SETTINGS))

        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", WEB_SETTINGS)
        django.setup()
        from webapp.catalog.models import ModelEntry

        queues = sorted(
            {"inference", *ModelEntry.objects.filter(enabled=True).values_list("queue", flat=True)}
        )
        host = os.environ.get("ATELIER_HOST", "127.0.0.1")
        port = os.environ.get("ATELIER_PORT", "8000")
        children["web"] = subprocess.Popen(
            # webapp.server: Daphne with WebSocket limits that follow ATELIER_MAX_FRAME_BYTES.
            [
                sys.executable,
                "-m",
                "webapp.server",
                "-b",
                host,
                "-p",
                port,
                "webapp.asgi:application",
            ],
            cwd=BASE_DIR,
            env=_env(WEB_SETTINGS),
        )
        children["worker"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "-Q",
                ",".join(queues),
                "-n",
                "atelier-worker@%h",
            ],
            cwd=BASE_DIR,
            env=_env(WORKER_SETTINGS),
        )
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        print(
            f"\n  Atelier is running at http://{shown}:{port}/\n"
            f"  Log in as the admin account shown above"
            f" (set ATELIER_ADMIN_PASSWORD before the first run to choose its password).\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        return _wait(children)
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if private:
            private.stop()


def _env(settings_module: str) -> dict[str, str]:
    """The environment of a child process, with its settings: the web's, or the worker
    side's (the web's plus the worker commands)."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module}


def _wait(children: dict[str, subprocess.Popen[bytes]]) -> int:
    """Block until Ctrl-C or until a child exits (then stop the rest)."""
    while True:
        for name, child in children.items():
            code = child.poll()
            if code is not None:
                print(f"The {name} process exited with code {code}; stopping Atelier.", flush=True)
                return code or 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
