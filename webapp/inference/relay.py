"""The back door: a generation's stream relayed to a client, the same way for every front
end (the chat socket, the one-generation socket, and server-sent events to come).

A `Relay` belongs to one client connection and is handed the coroutine that sends it an
event. For each generation it relays, it sends the events after the client's last `seq`
(read from the Redis stream, so a reconnecting client misses nothing and gets nothing
twice, from any web process), then the live ones, ending with `done` carrying the stored
text and its sanitized HTML. A finished generation whose stream has expired is answered
from the database. While the generation waits or runs, the process's one watcher
(`watching`) adds `queue`, `running` and `worker_lost` events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async

from webapp.inference import streams, watching
from webapp.inference.events import DoneEvent, Timings, Usage
from webapp.inference.models import Generation
from webapp.inference.rendering import render_markdown

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

STREAM_ERROR = {
    "type": "error",
    "code": "stream_error",
    "message": "The reply's stream was interrupted; reload to see it.",
}


class Relay:
    """The generations one client follows. Call `close` when the client goes."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.redis = streams.async_redis()
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, generation_id: int, after: int, unfinished: bool = False) -> None:
        """Relay the generation's events after `after` (replacing a relay of it already
        running). `unfinished`: the caller has just seen it queued or running, so its
        stream cannot have expired yet and the database is not asked."""
        previous = self.tasks.pop(generation_id, None)
        if previous is not None:
            previous.cancel()
        self.tasks[generation_id] = asyncio.create_task(
            self._relay(generation_id, after, unfinished)
        )

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await self.redis.aclose()

    async def _relay(self, generation_id: int, after: int, unfinished: bool) -> None:
        watcher = asyncio.create_task(self._watch(generation_id))
        try:
            if not unfinished and await self._answered_from_database(generation_id):
                return
            async for event in streams.read_events(self.redis, generation_id, after):
                if event is None:  # nothing new for a while: has the stream expired?
                    if await self._answered_from_database(generation_id):
                        return
                    continue
                if event["type"] == "done":
                    finished = await database_sync_to_async(_finished)(generation_id, event["seq"])
                    text = event.get("text")
                    if text is None:  # written without it: the database has the text
                        text = finished.output
                    done = with_text(event, text)
                    done["timings"] = timings_of(finished)
                    await self.send(dict(done))
                    return
                await self.send(dict(event))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay of generation %s failed", generation_id)
            await self.send(STREAM_ERROR)
        finally:
            watcher.cancel()
            if self.tasks.get(generation_id) is asyncio.current_task():
                del self.tasks[generation_id]

    async def _watch(self, generation_id: int) -> None:
        """Events that are not part of the stream, from the process's one watcher: `queue`
        (position, workers, estimated wait) while the generation is queued, and
        `worker_lost` when the worker running it stopped beating (another worker will
        requeue it; see workers/heartbeat.py): once, and again only if that worker beat
        again in between (a worker that lapsed, then died)."""
        shared = watching.watcher()
        events = shared.subscribe(generation_id)
        last: dict[str, Any] | None = None
        warned_worker = ""
        try:
            while (event := await events.get()) is not None:
                if event["type"] == "worker_lost":
                    if event["worker"] != warned_worker:
                        warned_worker = event["worker"]
                        await self.send(event)
                else:
                    if event["type"] == "running":  # its worker beats again
                        warned_worker = ""
                    if event != last:
                        await self.send(event)
                last = event
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher is a courtesy; the relay carries on without it
            log.exception("queue watcher of generation %s failed", generation_id)
        finally:
            shared.unsubscribe(generation_id, events)

    async def _answered_from_database(self, generation_id: int) -> bool:
        """A finished generation whose stream has expired from Redis: send its done event
        from the database (the text is kept there for good). True if it was sent.

        The database is read first: the worker writes its stream before it records the
        end, so "finished" and then "no stream" can only mean the stream expired. (In the
        other order, a reply that starts and ends between the two reads would be sent
        without its tokens.)"""
        generation = await database_sync_to_async(Generation.objects.get)(pk=generation_id)
        if not generation.is_finished:
            return False
        if await self.redis.exists(streams.stream_key(generation_id)):
            return False
        await self.send(dict(done_from_database(generation)))
        return True


@functools.lru_cache(maxsize=256)
def _finished(generation_id: int, seq: int) -> Generation:
    """A finished generation as recorded (the worker records it before its done event),
    read once per process however many clients relay it."""
    return Generation.objects.get(pk=generation_id)


def timings_of(generation: Generation) -> Timings:
    """When the reply was written, its time to first token (from the request) and its
    speed (tokens after the first over the time after the first)."""
    first = generation.first_token_at
    finished = generation.finished_at
    speed = None
    if first and finished and generation.completion_tokens > 1:
        seconds = (finished - first).total_seconds()
        if seconds > 0:
            speed = round((generation.completion_tokens - 1) / seconds, 1)
    return Timings(
        written_at=finished.isoformat() if finished else None,
        first_token_seconds=(
            round((first - generation.queued_at).total_seconds(), 2) if first else None
        ),
        tokens_per_second=speed,
    )


def with_text(event: DoneEvent, text: str) -> DoneEvent:
    return {**event, "text": text, "html": _rendered(event["generation"], event["seq"], text)}


@functools.lru_cache(maxsize=256)
def _rendered(generation_id: int, seq: int, text: str) -> str:
    """A reply's HTML, rendered once per process however many clients relay it."""
    return render_markdown(text)


def done_from_database(generation: Generation) -> DoneEvent:
    event = DoneEvent(
        type="done",
        generation=generation.pk,
        seq=0,
        status=generation.status,
        finish_reason=generation.finish_reason,
        error=generation.error,
        usage=Usage(
            prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens
        ),
    )
    done = with_text(event, generation.output)
    done["timings"] = timings_of(generation)
    return done
