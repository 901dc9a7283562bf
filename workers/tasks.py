"""Celery tasks. Payloads are JSON and name no generation: a message wakes one worker of
a queue, which takes the next generation in fair order from the database."""

from __future__ import annotations

from workers.celery_app import app
from workers.runner import run_next as _run_next


@app.task(name="workers.tasks.run_next")
def run_next(queue: str) -> None:
    _run_next(queue)
