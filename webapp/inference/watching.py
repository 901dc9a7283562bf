"""What a client is told about a generation outside its stream while it waits or runs:
`queue` (position, live workers, estimated wait), `running`, and `worker_lost`.

One watcher per process (per event loop) looks at every watched generation in one query,
at most every FIRST_LOOK_SECONDS and at least every WATCH_SECONDS. So a thousand waiting
relays cost one query a second, not a thousand, and the database thread stays free for
the messages people send. Queue positions come from inference's per-process snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from typing import Any

from channels.db import database_sync_to_async

from webapp.inference import services as inference
from webapp.inference.models import Generation, Status

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often every watched generation is looked at
FIRST_LOOK_SECONDS = 0.25  # a newly watched one is looked at within this (and no look sooner)

WatchEvent = dict[str, Any]


class Watcher:
    """Looks at the watched generations together and hands each subscriber its event;
    None means there is nothing more to watch (finished, or gone)."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Queue[WatchEvent | None]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, generation_id: int) -> asyncio.Queue[WatchEvent | None]:
        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._subscribers.setdefault(generation_id, set()).add(queue)
        self._wake.set()
        if self._task is None or self._task.done():
            # A context of its own: the process's one watcher outlives whichever client
            # started it, and must not hold (say) the executor of a view that has returned.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        return queue

    def unsubscribe(self, generation_id: int, queue: asyncio.Queue[WatchEvent | None]) -> None:
        found = self._subscribers.get(generation_id)
        if found is not None:
            found.discard(queue)
            if not found:
                del self._subscribers[generation_id]

    async def _run(self) -> None:
        while self._subscribers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WATCH_SECONDS - FIRST_LOOK_SECONDS)
            self._wake.clear()
            ids = list(self._subscribers)
            try:
                events = await database_sync_to_async(watch_events)(ids)
            except Exception:  # the watcher is a courtesy; the relays carry on without it
                log.exception("generation watcher: looking at %d generations failed", len(ids))
                events = None
            if events is not None:
                for generation_id in ids:
                    for queue in self._subscribers.get(generation_id, ()):
                        queue.put_nowait(events.get(generation_id))
            await asyncio.sleep(FIRST_LOOK_SECONDS)
        self._task = None


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watcher] = (
    weakref.WeakKeyDictionary()
)


def watcher() -> Watcher:
    """This event loop's watcher (asyncio objects belong to one loop)."""
    loop = asyncio.get_running_loop()
    found = _watchers.get(loop)
    if found is None:
        found = _watchers[loop] = Watcher()
    return found


def watch_events(generation_ids: list[int]) -> dict[int, WatchEvent]:
    """The event now for each generation still to watch (finished or missing ones are
    left out). One query for all of them; positions from the queue's snapshot."""
    events: dict[int, WatchEvent] = {}
    generations = Generation.objects.filter(pk__in=generation_ids).only(
        "status", "worker", "queue", "model_name"
    )
    live: set[str] | None = None
    for generation in generations:
        if generation.is_finished:
            continue
        if generation.status == Status.RUNNING:
            if live is None:
                live = inference.live_worker_names()
            events[generation.pk] = _running_event(generation, live)
        else:
            events[generation.pk] = _queue_event(generation)
    return events


def _running_event(generation: Generation, live: set[str]) -> WatchEvent:
    if generation.worker in live:
        return {"type": "running", "generation": generation.pk}
    return {
        "type": "worker_lost",
        "generation": generation.pk,
        "worker": generation.worker,
        "message": "The worker running this reply stopped responding; "
        "it will be retried as soon as a worker is available.",
    }


def _queue_event(generation: Generation) -> WatchEvent:
    info = inference.queue_info(generation)
    if info is None:
        return {"type": "running", "generation": generation.pk}
    if info.workers == 0:
        message = (
            f"No worker is serving {generation.model_name} right now; "
            "your request will start when one is."
        )
    elif info.position + info.running <= info.slots:  # a slot is free for it
        message = "Starting…"
    else:
        wait = f" (about {round(info.eta_seconds)} s)" if info.eta_seconds is not None else ""
        message = f"Waiting in the queue: position {info.position}{wait}."
    return {
        "type": "queue",
        "generation": generation.pk,
        "position": info.position,
        "running": info.running,
        "workers": info.workers,
        "eta_seconds": info.eta_seconds,
        "message": message,
    }
