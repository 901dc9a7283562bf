"""Per-generation Redis streams of events, and stop flags.

Each event is stored with the explicit stream id 0-<seq>, so "everything after sequence N"
is a plain XREAD from 0-N: a client that reconnects, to any web process, resumes exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from django.conf import settings

from webapp.inference.events import DoneEvent, StatusEvent, StreamEvent, TokenEvent, Usage


def stream_key(generation_id: int) -> str:
    return f"{settings.ATELIER_REDIS_PREFIX}:gen:{generation_id}:events"


def stop_key(generation_id: int) -> str:
    return f"{settings.ATELIER_REDIS_PREFIX}:gen:{generation_id}:stop"


_sync_client: redis.Redis | None = None


def sync_redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL,
            health_check_interval=30,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
    return _sync_client


# XREAD blocks this long; the socket timeout must be longer (redis-py's default is 5 s).
READ_BLOCK_MS = 5000


def async_redis() -> aioredis.Redis:
    """A new asyncio client; the caller closes it (clients are bound to one event loop)."""
    return aioredis.Redis.from_url(
        settings.REDIS_URL,
        health_check_interval=30,
        socket_timeout=READ_BLOCK_MS / 1000 + 10,
        socket_connect_timeout=5,
    )


def stop_channel(generation_id: int) -> str:
    return f"{settings.ATELIER_REDIS_PREFIX}:gen:{generation_id}:stopping"


def request_stop(generation_id: int) -> None:
    """Raise the stop flag (read by a worker that claims the generation later) and tell a
    worker running it now (its StopWatch hears the message)."""
    client = sync_redis()
    client.set(stop_key(generation_id), 1, ex=settings.ATELIER_STREAM_RETENTION_SECONDS)
    client.publish(stop_channel(generation_id), 1)


def delete_streams(generation_ids: list[int]) -> None:
    """Remove the stream of each generation (its stop flag stays until it expires, so
    that a worker still running one of them sees it)."""
    keys = [stream_key(generation_id) for generation_id in generation_ids]
    for start in range(0, len(keys), 500):
        sync_redis().delete(*keys[start : start + 500])


def stop_requested(generation_id: int) -> bool:
    return bool(sync_redis().exists(stop_key(generation_id)))


LISTEN_SECONDS = 1.0  # how long the watch thread waits for a message before looking again


class StopWatch:
    """Whether a running generation was asked to stop, answered from memory: a decoding
    loop asks at every step, and a Redis round trip per step cost a fast model a sixth of
    its time. A thread waits on a subscription to the generation's stop channel (blocked
    in the socket, so it takes no CPU from decoding); the flag itself is read once after
    subscribing, for a stop requested before. Should the subscription fail (Redis
    restarted), every call reads the flag directly, as before.

    Call it like a function; `close()` when the generation is over."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        self._stopped = threading.Event()
        self._closed = threading.Event()
        self._broken = False
        self._pubsub = sync_redis().pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(stop_channel(generation_id))
        except redis.RedisError:
            self._broken = True
        if stop_requested(generation_id):
            self._stopped.set()
        self._thread = threading.Thread(
            target=self._listen, name=f"stop-watch-{generation_id}", daemon=True
        )
        if not self._broken:
            self._thread.start()

    def _listen(self) -> None:
        try:
            while not self._closed.is_set() and not self._stopped.is_set():
                if self._pubsub.get_message(timeout=LISTEN_SECONDS) is not None:
                    self._stopped.set()
        except (redis.RedisError, OSError, ValueError):
            if not self._closed.is_set():
                self._broken = True
        finally:  # the subscription is only ever touched by this thread once started
            with contextlib.suppress(redis.RedisError, OSError):
                self._pubsub.close()

    def __call__(self) -> bool:
        if self._stopped.is_set():
            return True
        if self._broken and stop_requested(self.generation_id):
            self._stopped.set()
        return self._stopped.is_set()

    def close(self) -> None:
        """Stop listening: the thread ends (and unsubscribes) within LISTEN_SECONDS."""
        self._closed.set()
        if not self._thread.is_alive():
            with contextlib.suppress(redis.RedisError, OSError):
                self._pubsub.close()


class StreamWriter:
    """Appends a generation's events to its stream, coalescing tokens.

    Tokens are buffered and flushed as one event when `flush_ms` have passed since the
    last flush (the first token goes out at once), so a fast model does not cost one
    Redis round trip per token.
    """

    def __init__(
        self, generation_id: int, client: redis.Redis | None = None, flush_ms: int | None = None
    ):
        self.generation_id = generation_id
        self.client = client or sync_redis()
        self.key = stream_key(generation_id)
        self.flush_seconds = (
            settings.ATELIER_STREAM_FLUSH_MS if flush_ms is None else flush_ms
        ) / 1000
        self.seq = 0
        self.text = ""
        self._buffer: list[str] = []
        self._last_flush = 0.0

    def _append(self, event: StreamEvent) -> None:
        self.client.xadd(self.key, {"e": json.dumps(event)}, id=f"0-{event['seq']}")

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def resume(self) -> None:
        """Continue after the stream's last event. A generation run again after its worker
        died appends to its stream (after a `requeued` status) rather than rewriting it, so
        a client that holds sequence N never misses or repeats an event."""
        last: Any = self.client.xrevrange(self.key, count=1)
        entry_id = last[0][0] if last else b"0-0"
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        self.seq = int(entry_id.split("-")[1])
        self.text = ""
        self._buffer.clear()

    def status(self, status: str) -> None:
        self.flush()
        self._append(
            StatusEvent(
                type="status", generation=self.generation_id, seq=self._next_seq(), status=status
            )
        )

    def add(self, text: str) -> None:
        if not text:
            return
        self.text += text
        self._buffer.append(text)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        piece = "".join(self._buffer)
        self._buffer.clear()
        self._append(
            TokenEvent(
                type="token", generation=self.generation_id, seq=self._next_seq(), text=piece
            )
        )
        self._last_flush = time.monotonic()

    def done(
        self,
        status: str,
        *,
        finish_reason: str = "",
        error: str = "",
        usage: Usage | None = None,
        result: dict[str, Any] | None = None,
        text: str | None = None,
    ) -> None:
        """The last event. `text` is the reply as stored (the caller records the end in
        the database first): relays send it on without reading the database."""
        self.flush()
        event = DoneEvent(
            type="done",
            generation=self.generation_id,
            seq=self._next_seq(),
            status=status,
            finish_reason=finish_reason,
            error=error,
            usage=usage or Usage(prompt_tokens=0, completion_tokens=0),
        )
        if result is not None:
            event["result"] = result
        if text is not None:
            event["text"] = text
        self._append(event)
        self.client.expire(self.key, settings.ATELIER_STREAM_RETENTION_SECONDS)


def read_all(generation_id: int) -> list[StreamEvent]:
    """Every event the generation's stream holds now (for scripts and tests)."""
    entries: Any = sync_redis().xrange(stream_key(generation_id))
    return [_decode(fields) for _, fields in entries]


def _decode(fields: dict[Any, Any]) -> StreamEvent:
    raw = fields.get(b"e") or fields.get("e")
    if raw is None:
        raise ValueError("stream entry without an event")
    return cast(StreamEvent, json.loads(raw))


async def read_events(
    client: aioredis.Redis, generation_id: int, after: int = 0, block_ms: int = READ_BLOCK_MS
) -> AsyncIterator[StreamEvent | None]:
    """Yield the generation's events with seq > after, then live ones as they come.

    Yields None whenever `block_ms` pass with nothing new, so the caller can check
    whether the stream is still expected to grow. A lost Redis connection is retried
    from the last event read, so nothing is skipped or repeated.
    """
    key = stream_key(generation_id)
    last_id = f"0-{after}"
    while True:
        try:
            response: Any = await client.xread({key: last_id}, block=block_ms, count=500)
        except (redis.ConnectionError, redis.TimeoutError):
            await asyncio.sleep(0.5)
            yield None
            continue
        if not response:
            yield None
            continue
        for _key, entries in response:
            for entry_id, fields in entries:
                last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                yield _decode(fields)
