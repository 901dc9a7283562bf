"""The WebSocket of one generation: `/ws/generations/<id>/?after=N` relays its events
after sequence N (all of them by default), then live ones, ending with `done`.

The relay is `inference.relay`, as on the chat socket (database first for a finished
generation whose stream has expired, the watcher for the queue position, the done event
with the stored text); this socket is opened on one generation of the user's own instead
of by `subscribe` frames. The client may send `{"type": "stop"}`; anything else is
answered with an error. The studio's result pages use it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.accounts.models import User
from webapp.inference import services as inference
from webapp.inference.relay import Relay
from webapp.operations import metrics

# Close codes of Atelier's sockets (chat, one generation, job progress).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400


async def signed_in_user(consumer: AsyncJsonWebsocketConsumer) -> User | None:
    """The socket's user; a visitor's socket is closed with 4401 (and None returned)."""
    user = consumer.scope.get("user")
    if user is None or not user.is_authenticated:
        await consumer.close(code=CLOSE_UNAUTHENTICATED)
        return None
    return user


class GenerationConsumer(AsyncJsonWebsocketConsumer):
    generation_id: int
    relay: Relay

    async def connect(self) -> None:
        user = await signed_in_user(self)
        if user is None:
            return
        await self.accept()
        metrics.websocket_opened(self, "generation")
        after = _after(self.scope.get("query_string", b""))
        if after is None:
            await self.send_error("bad_field", "'after' must be a whole number, 0 or more.")
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        generation_id = int(self.scope["url_route"]["kwargs"]["generation_id"])
        generation = await database_sync_to_async(inference.generation_for_user)(
            user, generation_id
        )
        if generation is None:  # someone else's generation looks like none at all
            await self.send_error("not_found", "No such generation.")
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.generation_id = generation.pk
        self.relay = Relay(self.send_json)
        self.relay.start(generation.pk, after=after, unfinished=not generation.is_finished)

    async def disconnect(self, code: int) -> None:
        metrics.websocket_closed(self)
        if hasattr(self, "relay"):
            await self.relay.close()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        try:
            frame = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # RecursionError: a nesting bomb
            frame = None
        generation_id = getattr(self, "generation_id", None)
        if frame == {"type": "stop"} and generation_id is not None:
            await database_sync_to_async(inference.stop)(generation_id)
            return
        await self.send_error(
            "unknown_type", 'This socket only relays; the one message it takes is {"type": "stop"}.'
        )

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})


def _after(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return 0
    raw = values[-1]
    return int(raw) if raw.isdigit() and len(raw) < 12 else None
