"""Celery tasks. Payloads are JSON and name no generation: a message wakes one worker of
a queue, which takes queued generations in fair order from the database."""

from __future__ import annotations

from workers import scheduler
from workers.celery_app import app
from workers.runner import run_next as _run_next


@app.task(name="workers.tasks.run_next")
def run_next(queue: str) -> None:
    """Wake the worker's scheduler (it claims what it has room for, and runs each on a
    thread of its own, batched by model). A process without one (a test, a command)
    runs the next generation here."""
    running = scheduler.current()
    if running is not None and queue in running.queues:
        running.wake()
        return
    _run_next(queue)
