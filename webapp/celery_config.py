"""Celery configuration shared by the worker app and the web process's producer."""

from __future__ import annotations

from typing import Any


def celery_config(broker_url: str) -> dict[str, Any]:
    return {
        "broker_url": broker_url,
        "result_backend": None,  # results live in the database, on the Generation row
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,  # a crashed worker's task is redelivered ...
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # ... and no worker hoards tasks it is not running
        "task_default_queue": "inference",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 3600},
        "worker_hijack_root_logger": False,
    }
