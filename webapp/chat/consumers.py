"""The chat WebSocket: validate a frame, call a service, relay the generation's stream
(through `inference.relay`, as every front end does)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import InterfaceError, OperationalError, connections

from webapp.accounts.models import User
from webapp.chat import services
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
from webapp.inference import services as inference
from webapp.inference.consumers import signed_in_user
from webapp.inference.refusals import Refused
from webapp.inference.relay import Relay
from webapp.operations import metrics

R = TypeVar("R")
# The database is away for a moment (restarting): nothing was stored, and the same frame
# can be sent again once it is back.
DATABASE_AWAY = "database_unavailable"
DATABASE_AWAY_MESSAGE = (
    "The database is unavailable for a moment, so this was not saved; try again in a few "
    "seconds. Replies already streaming carry on."
)
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


# The protocol's error codes for the front door's refusals whose code differs.
PROTOCOL_CODES = {"model_unavailable": "not_found", "invalid_input": "bad_request"}


def error_code(refused: Refused) -> str:
    return PROTOCOL_CODES.get(refused.code, refused.code)


class ChatConsumer(AsyncJsonWebsocketConsumer):
    user: User
    relay: Relay

    async def connect(self) -> None:
        user = await signed_in_user(self)
        if user is None:
            return
        self.user = user
        self.relay = Relay(self.send_json)
        await self.accept()
        metrics.websocket_opened(self, "chat")

    async def disconnect(self, code: int) -> None:
        metrics.websocket_closed(self)
        if hasattr(self, "relay"):
            await self.relay.close()

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
        except Refused as exc:
            await self.send_error(error_code(exc), exc.message)
        except (OperationalError, InterfaceError) as exc:  # e.g. PostgreSQL restarting
            log.warning("chat consumer: the database is unavailable: %s", exc)
            await self.send_error(DATABASE_AWAY, DATABASE_AWAY_MESSAGE)
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
        except services.MessageBlocked as blocked:
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
        except services.MessageBlocked as blocked:
            await self.blocked("edit", blocked)
            return
        await self.accepted("edit", *posted)

    async def blocked(self, kind: str, blocked: services.MessageBlocked) -> None:
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
        self.relay.start(generation_id, after=0, unfinished=True)

    async def handle_subscribe(self, message: Subscribe) -> None:
        generation = await database_sync_to_async(inference.generation_for_user)(
            self.user, message.generation
        )
        if generation is None:
            raise services.NotFound("No such generation.")
        self.relay.start(generation.pk, after=message.after, unfinished=not generation.is_finished)

    async def handle_stop(self, message: Stop) -> None:
        generation = await database_sync_to_async(inference.generation_for_user)(
            self.user, message.generation
        )
        if generation is None:
            raise services.NotFound("No such generation.")
        await database_sync_to_async(inference.stop)(generation.pk)
