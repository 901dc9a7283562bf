"""The one place the web app talks to the Celery broker.

The web process does not import the worker code (which loads torch models); it sends
tasks by name through a producer-only Celery app with the same configuration. A message
does not name a generation: it wakes one worker of the queue, which then takes the next
generation in fair order (webapp.inference.services.fair_order).
"""

from __future__ import annotations

from functools import cache

from celery import Celery
from django.conf import settings

from webapp.celery_config import celery_config
from webapp.inference.streams import sync_redis

RUN_NEXT = "workers.tasks.run_next"


@cache
def producer() -> Celery:
    app = Celery("atelier-web")
    app.conf.update(celery_config(settings.REDIS_URL))
    return app


def wake_worker(queue: str) -> None:
    producer().send_task(RUN_NEXT, args=[queue], queue=queue)


def waiting_messages(queue: str) -> int:
    """Messages waiting in the broker's list for this queue (the Redis transport keeps
    a queue as a list named after it)."""
    return int(sync_redis().llen(queue))
