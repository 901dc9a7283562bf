"""Celery tasks. Payloads are JSON: ids only; the database row holds the rest."""

from __future__ import annotations

from workers.celery_app import app
from workers.runner import run_generation as _run_generation


@app.task(name="workers.tasks.run_generation")
def run_generation(generation_id: int) -> None:
    _run_generation(generation_id)
