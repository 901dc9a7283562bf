"""The Celery app that workers run: `celery -A workers.celery_app worker -Q <queues>`."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django.setup()

from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402

from webapp.celery_config import celery_config  # noqa: E402

app = Celery("atelier")
app.conf.update(celery_config(settings.REDIS_URL))
app.conf.update(include=["workers.tasks"])
