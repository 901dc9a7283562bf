"""The chat WebSocket: validate a frame, call a service, relay the generation's stream."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import connections

from webapp.accounts.models import User
from webapp.catalog.services import ModelNotAvailable
from webapp.chat import services, watching
from webapp.chat.protocol import (
    Edit,
    ProtocolError,
    Regenerate,
    SendMessage,
    Stop,
    Subscribe,
    parse_client_message,
    parse_frame,
)
from webapp.chat.rendering import render_markdown
from webapp.inference import services as inference
from webapp.inference import streams
from webapp.inference.events import DoneEvent, Usage
from webapp.inference.models import Generation

R = TypeVar("R")
# Storing a message (and queueing its reply) runs on a pool of its own, not on Channels'
# single database thread: when many people send at once, their transactions run side by
# side (PostgreSQL) instead of one after another. SQLite takes its write lock in turn.
# The pool's threads close their connections after each call (a local connect costs a few
# milliseconds), so none is left open when the process or a test database goes away.
_writes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chat-write")


def in_write_pool(func: Callable[..., R]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> R:
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return database_sync_to_async(call, thread_sensitive=False, executor=_writes)


Places = dict[str, dict[str, int | None]]  # message id -> its place among its siblings


def _places(conversation: Any, messages: list[Any]) -> Places:
    found = services.branches(conversation, messages)
    return {str(pk): branch.__dict__ for pk, branch in found.items()}


def posting(service: Callable[..., services.Posted]) -> Callable[..., Any]:
    """The service on the write pool, followed in the same call (and connection) by the
    new messages' places among their siblings, for the "2 of 3" controls."""

    def post(*args: Any, **kwargs: Any) -> tuple[services.Posted, Places]:
        posted = service(*args, **kwargs)
        return posted, _places(posted.conversation, [posted.user_message, posted.assistant_message])

    return in_write_pool(post)


log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401


class ChatConsumer(AsyncJsonWebsocketConsumer):
    user: User

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.redis = streams.async_redis()
        self.relays: dict[int, asyncio.Task[None]] = {}
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for task in getattr(self, "relays", {}).values():
            task.cancel()
        if hasattr(self, "redis"):
            await self.redis.aclose()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        try:
            message = parse_client_message(parse_frame(text_data, bytes_data))
            if isinstance(message, SendMessage):
                await self.handle_send(message)
            elif isinstance(message, Regenerate):
                await self.handle_regenerate(message)
            elif isinstance(message, Edit):
                await self.handle_edit(message)
            elif isinstance(message, Subscribe):
                await self.handle_subscribe(message)
            elif isinstance(message, Stop):
                await self.handle_stop(message)
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
        except services.Suspended as exc:
            await self.send_error("suspended", str(exc))
        except services.NotAllowed as exc:
            await self.send_error("not_allowed", str(exc))
        except inference.LimitReached as exc:
            await self.send_error("limit_reached", str(exc))
        except services.BadRequest as exc:
            await self.send_error("bad_request", str(exc))
        except (services.NotFound, ModelNotAvailable) as exc:
            await self.send_error("not_found", str(exc))
        except Exception:
            log.exception("chat consumer: unexpected error for user %s", self.user.pk)
            await self.send_error(
                "server_error", "Something went wrong on the server; please try again."
            )

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def handle_send(self, message: SendMessage) -> None:
        try:
            posted = await posting(services.post_message)(
                self.user,
                content=message.content,
                conversation_id=message.conversation,
                model_id=message.model,
                system=message.system,
                params=message.params,
            )
        except services.InputBlocked as blocked:
            await self.blocked("message", blocked)
            return
        await self.accepted("message", *posted)

    async def handle_regenerate(self, message: Regenerate) -> None:
        posted = await posting(services.regenerate)(
            self.user, message_id=message.message, model_id=message.model, params=message.params
        )
        await self.accepted("regenerate", *posted)

    async def handle_edit(self, message: Edit) -> None:
        try:
            posted = await posting(services.edit)(
                self.user,
                message_id=message.message,
                content=message.content,
                model_id=message.model,
                system=message.system,
                params=message.params,
            )
        except services.InputBlocked as blocked:
            await self.blocked("edit", blocked)
            return
        await self.accepted("edit", *posted)

    async def blocked(self, kind: str, blocked: services.InputBlocked) -> None:
        """The message was stored but blocked by the content policy: no reply follows."""

        def places() -> Places:
            return _places(blocked.conversation, [blocked.user_message])

        await self.send_json(
            {
                "type": "blocked",
                "kind": kind,
                "conversation": blocked.conversation.pk,
                "title": blocked.conversation.title,
                "created_conversation": blocked.created_conversation,
                "user_message": blocked.user_message.pk,
                "category": blocked.category,
                "message": blocked.message,
                "branches": await database_sync_to_async(places)(),
            }
        )

    async def accepted(self, kind: str, posted: services.Posted, places: Places) -> None:
        """Tell the client what was stored (with the new messages' places among their
        siblings) and start relaying the reply."""
        generation_id = posted.assistant_message.generation_id
        assert generation_id is not None
        await self.send_json(
            {
                "type": "accepted",
                "kind": kind,
                "conversation": posted.conversation.pk,
                "title": posted.conversation.title,
                "created_conversation": posted.created_conversation,
                "user_message": posted.user_message.pk,
                "assistant_message": posted.assistant_message.pk,
                "generation": generation_id,
                "branches": places,
            }
        )
        self.start_relay(generation_id, after=0, unfinished=True)

    async def handle_subscribe(self, message: Subscribe) -> None:
        generation = await database_sync_to_async(inference.generation_for_user)(
            self.user, message.generation
        )
        if generation is None:
            raise services.NotFound("No such generation.")
        self.start_relay(generation.pk, after=message.after, unfinished=not generation.is_finished)

    async def handle_stop(self, message: Stop) -> None:
        generation = await database_sync_to_async(inference.generation_for_user)(
            self.user, message.generation
        )
        if generation is None:
            raise services.NotFound("No such generation.")
        await database_sync_to_async(inference.stop)(generation.pk)

    def start_relay(self, generation_id: int, after: int, unfinished: bool = False) -> None:
        """Relay the generation's stream. `unfinished`: the caller has just seen it queued
        or running, so its stream cannot have expired yet and the database is not asked."""
        previous = self.relays.pop(generation_id, None)
        if previous is not None:
            previous.cancel()
        self.relays[generation_id] = asyncio.create_task(
            self.relay(generation_id, after, unfinished)
        )

    async def relay(self, generation_id: int, after: int, unfinished: bool = False) -> None:
        """Send the generation's events after `after` to the client, then live ones,
        ending with its done event (rendered to HTML here, in the web process). While
        it waits in the queue, a watcher tells the client its place."""
        watcher = asyncio.create_task(self.watch(generation_id))
        try:
            if not unfinished and await self.answered_from_database(generation_id):
                return
            async for event in streams.read_events(self.redis, generation_id, after):
                if event is None:  # nothing new for a while: has the stream expired?
                    if await self.answered_from_database(generation_id):
                        return
                    continue
                if event["type"] == "done":
                    text = event.get("text")
                    if text is None:  # written without it: the database has the text
                        generation = await database_sync_to_async(Generation.objects.get)(
                            pk=generation_id
                        )
                        text = generation.output
                    await self.send_json(_with_text(event, text))
                    return
                await self.send_json(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay of generation %s failed", generation_id)
            await self.send_error(
                "stream_error", "The reply's stream was interrupted; reload to see it."
            )
        finally:
            watcher.cancel()
            if self.relays.get(generation_id) is asyncio.current_task():
                del self.relays[generation_id]

    async def watch(self, generation_id: int) -> None:
        """Events that are not part of the stream: `queue` (position, workers, estimated
        wait) while the generation is queued, and `worker_lost` when the worker running it
        stopped beating (another worker will requeue it; see workers/heartbeat.py). They
        come from the process's one watcher (webapp/chat/watching.py)."""
        shared = watching.watcher()
        events = shared.subscribe(generation_id)
        last: dict[str, Any] | None = None
        warned_worker = ""
        try:
            while (event := await events.get()) is not None:
                if event["type"] == "worker_lost":
                    if event["worker"] != warned_worker:
                        warned_worker = event["worker"]
                        await self.send_json(event)
                elif event != last:
                    await self.send_json(event)
                last = event
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher is a courtesy; the relay carries on without it
            log.exception("queue watcher of generation %s failed", generation_id)
        finally:
            shared.unsubscribe(generation_id, events)

    async def answered_from_database(self, generation_id: int) -> bool:
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
        await self.send_json(_done_from_database(generation))
        return True


def _with_text(event: DoneEvent, text: str) -> DoneEvent:
    return {**event, "text": text, "html": _rendered(event["generation"], event["seq"], text)}


@functools.lru_cache(maxsize=256)
def _rendered(generation_id: int, seq: int, text: str) -> str:
    """A reply's HTML, rendered once per process however many tabs relay it."""
    return render_markdown(text)


def _done_from_database(generation: Generation) -> DoneEvent:
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
    return _with_text(event, generation.output)
