"""The chat WebSocket: validate a frame, call a service, relay the generation's stream."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.accounts.models import User
from webapp.catalog.services import ModelNotAvailable
from webapp.chat import services
from webapp.chat.protocol import (
    ProtocolError,
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
            elif isinstance(message, Subscribe):
                await self.handle_subscribe(message)
            elif isinstance(message, Stop):
                await self.handle_stop(message)
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
        except services.NotAllowed as exc:
            await self.send_error("not_allowed", str(exc))
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
        posted = await database_sync_to_async(services.post_message)(
            self.user,
            content=message.content,
            conversation_id=message.conversation,
            model_id=message.model,
            system=message.system,
            params=message.params,
        )
        generation_id = posted.assistant_message.generation_id
        assert generation_id is not None
        await self.send_json(
            {
                "type": "accepted",
                "conversation": posted.conversation.pk,
                "title": posted.conversation.title,
                "created_conversation": posted.created_conversation,
                "user_message": posted.user_message.pk,
                "assistant_message": posted.assistant_message.pk,
                "generation": generation_id,
            }
        )
        self.start_relay(generation_id, after=0)

    async def handle_subscribe(self, message: Subscribe) -> None:
        generation = await database_sync_to_async(inference.generation_for_user)(
            self.user, message.generation
        )
        if generation is None:
            raise services.NotFound("No such generation.")
        self.start_relay(generation.pk, after=message.after)

    async def handle_stop(self, message: Stop) -> None:
        generation = await database_sync_to_async(inference.generation_for_user)(
            self.user, message.generation
        )
        if generation is None:
            raise services.NotFound("No such generation.")
        await database_sync_to_async(inference.stop)(generation.pk)

    def start_relay(self, generation_id: int, after: int) -> None:
        previous = self.relays.pop(generation_id, None)
        if previous is not None:
            previous.cancel()
        self.relays[generation_id] = asyncio.create_task(self.relay(generation_id, after))

    async def relay(self, generation_id: int, after: int) -> None:
        """Send the generation's events after `after` to the client, then live ones,
        ending with its done event (rendered to HTML here, in the web process)."""
        try:
            if await self.answered_from_database(generation_id):
                return
            async for event in streams.read_events(self.redis, generation_id, after):
                if event is None:  # nothing new for a while: has the stream expired?
                    if await self.answered_from_database(generation_id):
                        return
                    continue
                if event["type"] == "done":
                    generation = await database_sync_to_async(Generation.objects.get)(
                        pk=generation_id
                    )
                    await self.send_json(_with_text(event, generation.output))
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
            if self.relays.get(generation_id) is asyncio.current_task():
                del self.relays[generation_id]

    async def answered_from_database(self, generation_id: int) -> bool:
        """A finished generation whose stream has expired from Redis: send its done event
        from the database (the text is kept there for good). True if it was sent."""
        if await self.redis.exists(streams.stream_key(generation_id)):
            return False
        generation = await database_sync_to_async(Generation.objects.get)(pk=generation_id)
        if not generation.is_finished:
            return False
        await self.send_json(_done_from_database(generation))
        return True


def _with_text(event: DoneEvent, text: str) -> DoneEvent:
    return {**event, "text": text, "html": render_markdown(text)}


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
