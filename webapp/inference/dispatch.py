"""The one place the web app talks to the Celery broker: sending tasks by name.

The web process does not import the worker code (which loads torch models); it sends
tasks by name through a producer-only Celery app with the same configuration.
"""

from __future__ import annotations

from functools import cache

from celery import Celery
from django.conf import settings

from webapp.celery_config import celery_config

RUN_GENERATION = "workers.tasks.run_generation"


@cache
def producer() -> Celery:
    app = Celery("atelier-web")
    app.conf.update(celery_config(settings.REDIS_URL))
    return app


def send_generation(generation_id: int, queue: str) -> None:
    producer().send_task(RUN_GENERATION, args=[generation_id], queue=queue)
