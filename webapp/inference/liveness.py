"""Which workers are alive, and what they serve: each worker process writes a heartbeat
key that expires, so a worker killed with SIGKILL disappears on its own."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass

from django.conf import settings

from webapp.inference.streams import sync_redis


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queues: tuple[str, ...]
    generations: tuple[int, ...] = ()  # running on it now
    slots: int = 1  # how many it runs at once (its widest batch)


def process_name(pid: int | None = None) -> str:
    """The name a worker process on this machine beats under (and records on the
    generations it claims): host and process id, so that the run command can name the work
    of a worker it saw die."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def _key(name: str) -> str:
    return f"{settings.ATELIER_REDIS_PREFIX}:worker:{name}"


def beat(name: str, queues: list[str], generations: Collection[int] = (), slots: int = 1) -> None:
    """Say that this worker is alive (for ATELIER_WORKER_TIMEOUT_SECONDS), what it runs
    and how many it can run at once."""
    payload = json.dumps(
        {"queues": queues, "generations": sorted(generations), "slots": max(1, slots)}
    )
    sync_redis().set(_key(name), payload, ex=settings.ATELIER_WORKER_TIMEOUT_SECONDS)


def forget(name: str) -> None:
    sync_redis().delete(_key(name))


def live_workers() -> list[WorkerInfo]:
    client = sync_redis()
    keys = list(client.scan_iter(match=_key("*"), count=500))
    if not keys:
        return []
    prefix = len(_key(""))
    workers = []
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:  # expired between SCAN and MGET
            continue
        data = json.loads(raw)
        name = (key.decode() if isinstance(key, bytes) else key)[prefix:]
        workers.append(
            WorkerInfo(
                name,
                tuple(data.get("queues", ())),
                tuple(data.get("generations", ())),
                int(data.get("slots", 1)),
            )
        )
    return workers
