"""`python -m webapp.launcher`: run the whole of Atelier on this machine.

Starts a private Redis unless REDIS_URL is set, migrates, prepares the starter models the
chat needs, creates the first admin, then runs and supervises the ASGI web server (Daphne)
and ATELIER_WORKERS Celery workers until Ctrl-C or SIGTERM, which stop everything it
started. Slow preparation (training the starter RNN) runs beside them; its catalog entries
say "being prepared" until it is done. A child that dies is started again after a pause
that grows while it keeps dying (a dead worker's generations are requeued at once); a
crash loop stops the studio with the reason. See docs/operations.md.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from webapp.operations import folder as metrics_folder
from webapp.private_redis import PrivateRedis

BASE_DIR = Path(__file__).resolve().parent.parent
WEB_SETTINGS = "webapp.settings"  # Daphne: never imports the workers
WORKER_SETTINGS = "workers.settings"  # manage.py commands and the Celery worker

FIRST_DELAY = 1.0  # seconds before a restart; doubles while a child keeps dying ...
MAX_DELAY = 30.0
STABLE_SECONDS = 60.0  # ... and starts over once it has stayed up this long


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class CrashLoop(Exception):
    """A child died too often within the window: supervising it further would not help."""


@dataclass
class Child:
    """A process the launcher starts and, unless it is a one-off, starts again."""

    name: str
    command: list[str]
    env: dict[str, str]
    restart: bool = True
    nice: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    exits: list[float] = field(default_factory=list)
    delay: float = 0.0
    restart_at: float | None = None

    def start(self) -> None:
        nice = self.nice
        self.process = subprocess.Popen(
            self.command,
            cwd=BASE_DIR,
            env=self.env,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        _say(f"Started the {self.name} process (pid {self.process.pid}).")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Restarts children that exit, with backoff; CrashLoop after more than `limit` exits
    of one child within `window` seconds. `on_exit(child, pid)` runs for each exit."""

    def __init__(
        self,
        children: list[Child],
        on_exit: Callable[[Child, int], None],
        limit: int,
        window: float,
    ) -> None:
        self.children = children
        self.on_exit = on_exit
        self.limit = limit
        self.window = window

    def run(self) -> None:
        for child in self.children:
            child.start()
        while True:
            self.check(time.monotonic())
            time.sleep(0.2)

    def check(self, now: float) -> None:
        for child in self.children:
            if child.process is None:
                if child.restart_at is not None and now >= child.restart_at:
                    child.start()
                continue
            code = child.process.poll()
            if code is None:
                continue
            pid, child.process = child.process.pid, None
            if not child.restart:
                _say(f"The {child.name} process {describe_exit(code)}.")
                continue
            self.on_exit(child, pid)
            self._schedule_restart(child, code, now)

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        child.exits = [t for t in child.exits if now - t < self.window] + [now]
        if len(child.exits) > self.limit:
            raise CrashLoop(
                f"The {child.name} process {describe_exit(code)}: {len(child.exits)} exits "
                f"within {self.window:.0f} s, a crash loop; giving up (see its output above). "
                "Stopping Atelier."
            )
        stable = now - child.started_at >= STABLE_SECONDS
        child.delay = FIRST_DELAY if stable else min(MAX_DELAY, max(FIRST_DELAY, 2 * child.delay))
        child.restart_at = now + child.delay
        _say(f"The {child.name} process {describe_exit(code)}; restarting in {child.delay:.0f} s.")

    def stop(self, timeout: float = 15) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
    supervisor: Supervisor | None = None
    try:
        if not os.environ.get("REDIS_URL"):
            private = PrivateRedis(var_dir / "redis")
            os.environ["REDIS_URL"] = private.start()
            _say(f"Started a private Redis at {os.environ['REDIS_URL']}")
        _prepare()
        supervisor = Supervisor(
            _children(),
            on_exit=_after_exit,
            limit=int(os.environ.get("ATELIER_RESTART_LIMIT", "5")),
            window=float(os.environ.get("ATELIER_RESTART_WINDOW_SECONDS", "300")),
        )
        if private:
            _requeue_abandoned()  # nothing else can run on a Redis started just now
        _announce()
        supervisor.run()
        return 0
    except KeyboardInterrupt:
        return 0
    except CrashLoop as exc:
        _say(str(exc))
        return 1
    finally:
        # A second Ctrl-C must not cut the stopping short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if supervisor:
            supervisor.stop()
        if private:
            private.stop()


def _prepare() -> None:
    """Migrate, collect static files, prepare what the chat needs (slow models are
    registered as being prepared), create the first admin."""
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    steps = (
        ["migrate", "--no-input", "-v", "0"],
        ["collectstatic", "--no-input", "-v", "0"],
        ["prepare_models", "--except-slow"],
        ["ensure_admin"],
    )
    for step in steps:
        subprocess.run(manage + step, check=True, cwd=BASE_DIR, env=_env(WORKER_SETTINGS))
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", WEB_SETTINGS)
    django.setup()


def _children() -> list[Child]:
    """The web server, the workers, and the background preparation if any is left."""
    from webapp.catalog.models import ModelEntry

    queues = sorted(
        {"inference", *ModelEntry.objects.filter(enabled=True).values_list("queue", flat=True)}
    )
    host = os.environ.get("ATELIER_HOST", "127.0.0.1")
    port = os.environ.get("ATELIER_PORT", "8000")
    python = sys.executable
    # webapp.server: Daphne with WebSocket limits that follow ATELIER_MAX_FRAME_BYTES.
    web = [python, "-m", "webapp.server", "-b", host, "-p", port, "webapp.asgi:application"]
    children = [Child("web", web, _env(WEB_SETTINGS))]
    count = max(1, int(os.environ.get("ATELIER_WORKERS", "1")))
    for number in range(1, count + 1):
        worker = [python, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool", "solo"]
        worker += ["--loglevel", "INFO", "-Q", ",".join(queues)]
        worker += ["-n", f"atelier-worker-{number}@%h", "--without-mingle", "--without-gossip"]
        name = "worker" if count == 1 else f"worker {number}"
        children.append(Child(name, worker, _env(WORKER_SETTINGS)))
    if ModelEntry.objects.filter(preparing=True).exists():
        prepare = [python, str(BASE_DIR / "manage.py"), "prepare_models", "--slow"]
        nice = max(0, min(19, int(os.environ.get("ATELIER_WORKER_NICE", "10"))))
        children.append(Child("model preparation", prepare, _env(WORKER_SETTINGS), False, nice))
    return children


def _announce() -> None:
    host = os.environ.get("ATELIER_HOST", "127.0.0.1")
    port = os.environ.get("ATELIER_PORT", "8000")
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    _say(
        f"\n  Atelier is running at http://{shown}:{port}/\n"
        f"  Log in as the admin account shown above"
        f" (set ATELIER_ADMIN_PASSWORD before the first run to choose its password).\n"
        f"  Ctrl-C stops everything.\n"
    )


def _after_exit(child: Child, pid: int) -> None:
    metrics_folder.forget_process(pid)  # its open WebSockets are closed now
    _requeue_work_of_worker(child, pid)


def _requeue_work_of_worker(child: Child, pid: int) -> None:
    """A worker that died held generations: requeue them now (the process is gone for
    sure) rather than after its heartbeat expires."""
    if child.command[1:3] != ["-m", "celery"]:
        return
    from django.db import close_old_connections

    from webapp.inference import liveness, services
    from webapp.inference.models import Generation, Status

    name = liveness.process_name(pid)
    try:
        close_old_connections()
        liveness.forget(name)
        held = Generation.objects.filter(status=Status.RUNNING, worker=name)
        for generation_id in held.values_list("pk", flat=True):
            services.recover_orphan(generation_id, name)
        close_old_connections()
    except Exception as exc:  # the database or Redis away: the heartbeats do it later
        _say(f"Could not requeue the work of {name} yet ({type(exc).__name__}: {exc}).")


def _requeue_abandoned() -> None:
    """Generations left running when Atelier last stopped without a clean shutdown (its
    workers killed outright) are queued again, or failed after their last attempt."""
    from webapp.inference import services

    abandoned = services.running_without_worker(set())
    for generation_id, worker in abandoned:
        services.recover_orphan(generation_id, worker)
    if abandoned:
        _say(f"Requeued {len(abandoned)} repl(ies) left running by the previous run.")


def _say(text: str) -> None:
    print(text, flush=True)


def _env(settings_module: str) -> dict[str, str]:
    """The environment of a child process, with its settings: the web's, or the worker
    side's (the web's plus the worker commands)."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module}


if __name__ == "__main__":
    sys.exit(main())
