"""Database writes a worker must not lose while the database restarts: a generation's
outcome, which only the worker that ran it can record (until it is recorded the
generation stays "running" under a worker that is alive, so nothing else would end it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connections

log = logging.getLogger(__name__)
T = TypeVar("T")

PATIENCE_SECONDS = 600.0  # longer than any restart; then the error is raised as before


def while_database_away(operation: Callable[[], T], what: str) -> T:
    """Run `operation`, and again while the database is unreachable. A failed attempt
    leaves this thread's connection broken (the server closed it): it is closed, so that
    the next attempt takes a fresh one from the pool."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return operation()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: the database is unavailable (%s); trying again", what, exc)
            close_old_connections()
            connections["default"].close()
            time.sleep(delay)
            delay = min(2.0, delay * 2)
