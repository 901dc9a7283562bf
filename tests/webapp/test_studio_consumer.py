"""The one-shot result socket /ws/generations/<id>/: it relays the generation's stream to
its owner (the worker's task body runs in a thread here, against real Redis), resumes
after a sequence number, answers a finished generation whose stream expired from the
database, stops a generation, and refuses everyone else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections

from tests.conftest import DIRECT_QUEUE
from tests.webapp.test_studio_views import REPORT, models, tiny_folders, uploads_dir
from webapp.inference import streams
from webapp.inference.models import Generation, Status
from webapp.inference.routing import websocket_urlpatterns
from webapp.studio import services
from workers.runner import run_next

__all__ = ["models", "tiny_folders", "uploads_dir"]  # fixtures used here

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]

WATCH_EVENTS = {"queue", "running", "worker_lost"}  # outside the stream (no seq)


async def connect(user: Any, generation_id: int, query: str = "") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/generations/{generation_id}/{query}"
    )
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def until_done(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    events = []
    while True:
        event = await communicator.receive_json_from(timeout=60)
        if event["type"] in WATCH_EVENTS:
            continue
        events.append(event)
        if event["type"] in ("done", "error"):
            return events


def _run_and_close() -> int | None:
    try:
        return run_next(DIRECT_QUEUE)
    finally:
        connections.close_all()


async def summary_for(user: Any) -> int:
    result = await sync_to_async(services.summarize)(
        user, text=REPORT * 4, length="short", model_id=None
    )
    return int(result.generation_id)


async def test_a_result_streams_to_its_owner_in_order(alice: Any, models: Any) -> None:
    generation_id = await summary_for(alice)
    communicator = await connect(alice, generation_id)
    worker = asyncio.create_task(sync_to_async(_run_and_close, thread_sensitive=False)())
    events = await until_done(communicator)
    assert await worker == generation_id
    generation = await Generation.objects.aget(pk=generation_id)
    assert generation.status == Status.DONE, generation.error
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0] == {
        "type": "status",
        "generation": generation_id,
        "seq": 1,
        "status": "running",
    }
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == generation.output != ""
    done = events[-1]
    assert done["status"] == "done" and done["text"] == generation.output
    assert done["result"]["length"] == "short"
    await communicator.disconnect()

    # A client that saw the first two events reconnects: it gets the rest, nothing twice.
    again = await connect(alice, generation_id, "?after=2")
    assert await until_done(again) == events[2:]
    await again.disconnect()


async def test_a_finished_result_whose_stream_expired_comes_from_the_database(
    alice: Any, models: Any
) -> None:
    generation_id = await summary_for(alice)
    assert await sync_to_async(_run_and_close, thread_sensitive=False)() == generation_id
    await sync_to_async(streams.delete_streams)([generation_id])
    communicator = await connect(alice, generation_id, "?after=0")
    [done] = await until_done(communicator)
    generation = await Generation.objects.aget(pk=generation_id)
    assert done["type"] == "done" and done["status"] == "done"
    assert done["text"] == generation.output and done["seq"] == 0
    await communicator.disconnect()


async def test_stop_ends_a_queued_result(alice: Any, models: Any) -> None:
    generation_id = await summary_for(alice)
    communicator = await connect(alice, generation_id)
    await communicator.send_to(text_data='{"type": "stop"}')
    events = await until_done(communicator)
    assert events[-1]["type"] == "done" and events[-1]["status"] == "stopped"
    assert (await Generation.objects.aget(pk=generation_id)).status == Status.STOPPED
    assert await sync_to_async(_run_and_close, thread_sensitive=False)() is None  # not run
    await communicator.disconnect()


async def test_anything_but_stop_is_answered_with_an_error(alice: Any, models: Any) -> None:
    generation_id = await summary_for(alice)
    communicator = await connect(alice, generation_id)
    await communicator.send_to(text_data='{"type": "message", "content": "hi"}')
    event = await communicator.receive_json_from(timeout=10)
    while event["type"] in WATCH_EVENTS:
        event = await communicator.receive_json_from(timeout=10)
    assert event["type"] == "error" and event["code"] == "unknown_type"
    assert (await Generation.objects.aget(pk=generation_id)).status == Status.QUEUED
    await communicator.disconnect()


async def test_another_users_result_is_refused_like_a_missing_one(
    alice: Any, bob: Any, models: Any
) -> None:
    generation_id = await summary_for(alice)
    for wanted in (generation_id, generation_id + 1000):
        communicator = await connect(bob, wanted)
        event = await communicator.receive_json_from(timeout=10)
        assert event == {"type": "error", "code": "not_found", "message": "No such generation."}
        closed = await communicator.receive_output(timeout=10)
        assert closed == {"type": "websocket.close", "code": 4404}


async def test_a_bad_after_is_refused(alice: Any, models: Any) -> None:
    generation_id = await summary_for(alice)
    communicator = await connect(alice, generation_id, "?after=-3")
    event = await communicator.receive_json_from(timeout=10)
    assert event["type"] == "error" and event["code"] == "bad_field"
    assert await communicator.receive_output(timeout=10) == {
        "type": "websocket.close",
        "code": 4400,
    }


async def test_visitors_are_closed_before_anything_is_sent(alice: Any, models: Any) -> None:
    generation_id = await summary_for(alice)
    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/generations/{generation_id}/"
    )
    communicator.scope["user"] = AnonymousUser()
    connected, code = await communicator.connect()
    assert (connected, code) == (False, 4401)
