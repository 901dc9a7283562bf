"""A streamed request while it waits in the queue (no worker takes it: its queue has only
a heartbeat): the queue position and keep-alive comments, and the client that leaves
withdraws it from the queue. Real Redis, the real relay and watcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, override_settings

from tests.conftest import DIRECT_QUEUE
from webapp.api import keys
from webapp.catalog.models import ModelEntry
from webapp.inference import liveness
from webapp.inference.models import Generation, Status

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]


@override_settings(ATELIER_API_KEEPALIVE_SECONDS=1)
async def test_a_waiting_stream_tells_its_place_keeps_alive_and_leaving_withdraws_it(
    alice: Any, chat_model: ModelEntry
) -> None:
    name = f"api-stream-test-{DIRECT_QUEUE}"
    await sync_to_async(liveness.beat)(name, [DIRECT_QUEUE])
    secret = (await sync_to_async(keys.create_key)(alice, "k")).secret
    try:
        response = await AsyncClient().post(
            "/v1/chat/completions",
            json.dumps(
                {
                    "model": "tiny-llama",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Hello"}],
                }
            ),
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        seen: list[str] = []
        heard = asyncio.Event()

        async def read() -> None:
            async for chunk in response.streaming_content:
                seen.append(chunk.decode() if isinstance(chunk, bytes) else str(chunk))
                kinds = {s.split(" ")[1] for s in seen if s.startswith(": ")}
                if {"keep-alive\n\n", "queue"} <= kinds:
                    heard.set()

        reader = asyncio.create_task(read())
        await asyncio.wait_for(heard.wait(), 20)
        first = json.loads(seen[0].removeprefix("data: "))
        assert first["object"] == "chat.completion.chunk"
        assert first["choices"][0]["delta"]["role"] == "assistant"
        queue = json.loads(next(s for s in seen if s.startswith(": queue "))[8:])
        assert queue["position"] == 1 and queue["workers"] == 1 and queue["choice"] == 0
        # The client goes away: Django's ASGI handler cancels the response's iterator.
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        generation = await Generation.objects.aget(user=alice)
        assert generation.status == Status.STOPPED  # left the queue at once
    finally:
        await sync_to_async(liveness.forget)(name)
