"""The Celery app that workers run: `celery -A workers.celery_app worker -Q <queues>`."""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workers.settings")
django.setup()

from celery import Celery  # noqa: E402
from celery.signals import worker_init, worker_ready, worker_shutdown  # noqa: E402
from django.conf import settings  # noqa: E402

from webapp.celery_config import celery_config  # noqa: E402
from webapp.operations import host_exporter  # noqa: E402
from workers import scheduler  # noqa: E402
from workers.heartbeat import Heartbeat  # noqa: E402

app = Celery("atelier")
app.conf.update(celery_config(settings.REDIS_URL))
app.conf.update(include=["workers.tasks"])

_heartbeat: Heartbeat | None = None


@worker_init.connect
def _lower_priority(**kwargs: Any) -> None:
    """Give the CPU to the web process first where they share a machine (the pool's
    processes, if any, inherit it). Only ever lowered: raising needs privileges."""
    wanted = max(0, min(19, settings.ATELIER_WORKER_NICE))
    current = os.nice(0)
    if wanted > current:
        os.nice(wanted - current)


@worker_ready.connect
def _start_heartbeat(sender: Any, **kwargs: Any) -> None:
    """The worker is consuming: start saying so (see workers/heartbeat.py), and start
    claiming work (workers/scheduler.py)."""
    queues = sender.app.amqp.queues
    names = sorted(queues.consume_from or queues)
    global _heartbeat
    _heartbeat = Heartbeat(names)
    _heartbeat.start()
    scheduler.start(names)
    host_exporter.start()  # this host's metrics, when ATELIER_METRICS_PORT asks for it


@worker_shutdown.connect
def _stop_heartbeat(**kwargs: Any) -> None:
    scheduler.stop()  # running generations end, or are requeued
    if _heartbeat is not None:
        _heartbeat.stop()
