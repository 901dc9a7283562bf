"""Following a request's generations to their end through the back door
(`inference.relay.Relay`): every event of each, tagged with its choice, on one queue.

The API's views read it two ways: to the `done` events (a plain JSON answer), or as it
comes (server-sent events). Either way, a client that goes before the end stops what it
asked for (`stop_unfinished`): the model is freed at its next step."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from webapp.inference import services as inference
from webapp.inference.relay import Relay


@dataclass
class Follower:
    """The events of `generation_ids` (choice i is generation_ids[i]) until each is done."""

    generation_ids: list[int]
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)  # choice -> done event
    relays: list[Relay] = field(default_factory=list)

    def start(self) -> None:
        """Start relaying. The relays' tasks outlive the view that starts them (a stream
        is sent after the view returns), so they start in a context of their own: one
        inherited from the view would hold the executor of its sync middleware, gone
        once the view has returned."""
        contextvars.Context().run(self._start_relays)

    def _start_relays(self) -> None:
        for choice, generation_id in enumerate(self.generation_ids):
            relay = Relay(self._sender(choice))
            relay.start(generation_id, after=0, unfinished=True)
            self.relays.append(relay)

    def _sender(self, choice: int) -> Any:
        async def send(event: dict[str, Any]) -> None:
            await self.queue.put((choice, event))

        return send

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.generation_ids)

    async def events(self, idle_seconds: float) -> AsyncIterator[tuple[int, dict[str, Any]] | None]:
        """Each (choice, event) as it comes, None when `idle_seconds` pass without one;
        ends after the last done event. A stream error counts as the end of its choice."""
        while not self.finished:
            try:
                choice, event = await asyncio.wait_for(self.queue.get(), idle_seconds)
            except TimeoutError:
                yield None
                continue
            if event.get("type") in ("done", "error"):
                self.done[choice] = event
            yield choice, event

    async def wait(self) -> list[dict[str, Any]]:
        """The done event of every choice, in order."""
        async for _ in self.events(idle_seconds=30):
            pass
        return [self.done[choice] for choice in range(len(self.generation_ids))]

    async def close(self) -> None:
        for relay in self.relays:
            with contextlib.suppress(Exception):
                await relay.close()

    async def stop_unfinished(self) -> None:
        """Stop the generations not yet done (the client left before the end)."""
        for choice, generation_id in enumerate(self.generation_ids):
            if choice not in self.done:
                await sync_to_async(inference.stop)(generation_id)
