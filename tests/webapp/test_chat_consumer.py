"""The chat WebSocket consumer, against real Redis streams; replies are produced by calling
the worker's task body directly (the real-process path is in tests/test_e2e.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from tests.conftest import DIRECT_QUEUE
from webapp.asgi import application
from webapp.chat.consumers import ChatConsumer
from webapp.chat.models import Conversation, Message
from webapp.inference.models import Generation, Status
from workers.runner import run_next

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]


async def connect(user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


WATCH_EVENTS = {"queue", "running", "worker_lost"}  # outside the stream (no seq)


async def receive_until_done(
    communicator: WebsocketCommunicator, timeout: float = 30, *, watch: bool = False
) -> list[dict[str, Any]]:
    """The events up to done (or an error); the watcher's events only when watch=True."""
    events = []
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        if event["type"] in WATCH_EVENTS and not watch:
            continue
        events.append(event)
        if event["type"] in ("done", "error"):
            return events


async def send_message(communicator: WebsocketCommunicator, **fields: Any) -> dict[str, Any]:
    await communicator.send_json_to(
        {"type": "message", "content": "Hello there", "max_tokens": 12, **fields}
    )
    accepted = await communicator.receive_json_from(timeout=10)
    assert accepted["type"] == "accepted", accepted
    return accepted


def _run_and_close() -> int | None:
    try:
        return run_next(DIRECT_QUEUE)
    finally:
        connections.close_all()


async def run_worker(generation_id: int | None) -> None:
    """Run the worker's task body once, as a woken worker would; it must take generation_id
    (None: find nothing to run)."""
    ran = await sync_to_async(_run_and_close, thread_sensitive=False)()
    assert ran == generation_id


async def test_message_streams_a_reply_that_is_stored(alice: Any, chat_model: Any) -> None:
    communicator = await connect(alice)
    accepted = await send_message(communicator, temperature=0)
    worker = asyncio.create_task(run_worker(accepted["generation"]))
    events = await receive_until_done(communicator)
    await worker
    tokens = [e for e in events if e["type"] == "token"]
    done = events[-1]
    assert done["type"] == "done" and done["status"] == "done"
    assert tokens, "the reply arrived as token events"
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    streamed = "".join(e["text"] for e in tokens)
    generation = await Generation.objects.aget(pk=accepted["generation"])
    assert generation.output == streamed == done["text"]
    assert generation.status == Status.DONE
    assert generation.completion_tokens == done["usage"]["completion_tokens"] > 0
    assert generation.started_at and generation.first_token_at and generation.finished_at
    assert await Message.objects.filter(conversation_id=accepted["conversation"]).acount() == 2
    await communicator.disconnect()


async def test_reconnecting_client_resumes_after_its_last_sequence(
    alice: Any, chat_model: Any
) -> None:
    first = await connect(alice)
    accepted = await send_message(first, temperature=0, max_tokens=30)
    await run_worker(accepted["generation"])  # finishes before anyone reads
    all_events = await receive_until_done(first)
    await first.disconnect()
    middle = all_events[len(all_events) // 2]["seq"]

    second = await connect(alice)
    await second.send_json_to(
        {"type": "subscribe", "generation": accepted["generation"], "after": middle}
    )
    resumed = await receive_until_done(second)
    assert [e["seq"] for e in resumed] == [e["seq"] for e in all_events if e["seq"] > middle]
    assert resumed[-1]["text"] == all_events[-1]["text"]
    await second.disconnect()


async def test_stop_before_a_worker_starts_ends_the_stream(alice: Any, chat_model: Any) -> None:
    communicator = await connect(alice)
    accepted = await send_message(communicator)
    await communicator.send_json_to({"type": "stop", "generation": accepted["generation"]})
    events = await receive_until_done(communicator)
    assert events[-1]["status"] == "stopped"
    await run_worker(None)  # the wake-up message arrives later: nothing to run
    generation = await Generation.objects.aget(pk=accepted["generation"])
    assert generation.status == Status.STOPPED and generation.output == ""
    await communicator.disconnect()


async def test_pending_user_cannot_generate_and_nothing_is_stored(
    make_user: Any, chat_model: Any
) -> None:
    pending = await sync_to_async(make_user)("pat", role="pending")
    communicator = await connect(pending)
    await communicator.send_json_to({"type": "message", "content": "hi"})
    error = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "not_allowed"
    assert "approval" in error["message"]
    assert await Conversation.objects.acount() == 0 and await Generation.objects.acount() == 0
    await communicator.disconnect()


async def test_other_users_ids_look_like_missing_ones(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    communicator = await connect(alice)
    accepted = await send_message(communicator)
    await communicator.disconnect()

    intruder = await connect(bob)
    for frame in (
        {"type": "subscribe", "generation": accepted["generation"]},
        {"type": "stop", "generation": accepted["generation"]},
        {"type": "message", "content": "mine now", "conversation": accepted["conversation"]},
    ):
        await intruder.send_json_to(frame)
        error = await intruder.receive_json_from(timeout=5)
        assert error["type"] == "error" and error["code"] == "not_found", frame
    # Bob's stop did not stop Alice's generation, and he added nothing to her conversation.
    generation = await Generation.objects.aget(pk=accepted["generation"])
    assert generation.status == Status.QUEUED
    assert await Message.objects.filter(conversation_id=accepted["conversation"]).acount() == 2
    await intruder.disconnect()


async def test_bad_frames_get_errors_and_the_connection_stays_usable(
    alice: Any, chat_model: Any
) -> None:
    communicator = await connect(alice)
    await communicator.send_to(text_data="{not json")
    assert (await communicator.receive_json_from())["code"] == "bad_json"
    await communicator.send_to(bytes_data=b"\x00binary")
    assert (await communicator.receive_json_from())["code"] == "binary_frame"
    await communicator.send_to(text_data=json.dumps({"type": "message", "content": "x" * 300_000}))
    assert (await communicator.receive_json_from())["code"] == "frame_too_large"
    await communicator.send_json_to({"type": "message", "content": "hi", "temperature": 5})
    assert (await communicator.receive_json_from())["code"] == "out_of_range"
    await communicator.send_json_to({"type": "message", "content": "hi", "model": 999999})
    assert (await communicator.receive_json_from())["code"] == "not_found"
    assert await Generation.objects.acount() == 0
    await send_message(communicator)  # still usable
    await communicator.disconnect()


async def test_unauthenticated_sockets_are_closed() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"http://localhost")]
    )
    connected, code = await communicator.connect()
    assert not connected or code == 4401
    await communicator.disconnect()


async def test_foreign_origins_are_refused() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_model_load_error_fails_the_generation_and_is_recorded_on_the_entry(
    alice: Any, chat_model: Any, tmp_path: Any
) -> None:
    chat_model.source = str(tmp_path / "gone")
    await chat_model.asave()
    communicator = await connect(alice)
    accepted = await send_message(communicator)
    await run_worker(accepted["generation"])
    events = await receive_until_done(communicator)
    assert events[-1]["status"] == "failed"
    assert "does not exist" in events[-1]["error"] and "tiny-llama" in events[-1]["error"]
    await chat_model.arefresh_from_db()
    assert "does not exist" in chat_model.last_error
    await communicator.disconnect()


async def test_an_unexpected_failure_ends_the_generation_as_failed(
    alice: Any, chat_model: Any
) -> None:
    communicator = await connect(alice)
    accepted = await send_message(communicator)
    # A row the runner cannot use (no messages): whatever breaks, it must not stay running.
    await Generation.objects.filter(pk=accepted["generation"]).aupdate(input={})
    await run_worker(accepted["generation"])
    events = await receive_until_done(communicator)
    assert events[-1]["status"] == "failed" and "KeyError" in events[-1]["error"]
    generation = await Generation.objects.aget(pk=accepted["generation"])
    assert generation.status == Status.FAILED and generation.finished_at is not None
    await communicator.disconnect()


async def test_a_finished_reply_whose_stream_expired_is_sent_from_the_database(
    alice: Any, chat_model: Any
) -> None:
    from webapp.inference.streams import stream_key, sync_redis

    communicator = await connect(alice)
    accepted = await send_message(communicator, temperature=0)
    await run_worker(accepted["generation"])
    first = await receive_until_done(communicator)
    sync_redis().delete(stream_key(accepted["generation"]))  # as if the retention had passed

    await communicator.send_json_to({"type": "subscribe", "generation": accepted["generation"]})
    done = await communicator.receive_json_from(timeout=2)  # at once, not after a block
    assert done["type"] == "done" and done["status"] == "done"
    assert done["text"] == first[-1]["text"] and done["html"] == first[-1]["html"]
    await communicator.disconnect()


async def test_regenerate_and_edit_over_the_socket_report_branches(
    alice: Any, chat_model: Any
) -> None:
    communicator = await connect(alice)
    first = await send_message(communicator, temperature=0)
    await run_worker(first["generation"])
    await receive_until_done(communicator)
    await communicator.send_json_to(
        {"type": "regenerate", "message": first["assistant_message"], "max_tokens": 6}
    )
    again = await communicator.receive_json_from(timeout=10)
    assert again["type"] == "accepted" and again["kind"] == "regenerate"
    assert again["user_message"] == first["user_message"]
    place = again["branches"][str(again["assistant_message"])]
    assert (place["index"], place["count"], place["previous"]) == (
        2,
        2,
        first["assistant_message"],
    )
    await run_worker(again["generation"])
    assert (await receive_until_done(communicator))[-1]["status"] == "done"
    await communicator.send_json_to(
        {"type": "edit", "message": first["user_message"], "content": "Hi, edited"}
    )
    edited = await communicator.receive_json_from(timeout=10)
    assert edited["kind"] == "edit" and edited["user_message"] != first["user_message"]
    assert edited["branches"][str(edited["user_message"])]["count"] == 2
    assert edited["branches"][str(edited["assistant_message"])]["count"] == 1
    await run_worker(edited["generation"])
    await receive_until_done(communicator)
    await communicator.disconnect()


async def test_a_waiting_client_is_told_that_no_worker_serves_the_model(
    alice: Any, chat_model: Any
) -> None:
    communicator = await connect(alice)
    accepted = await send_message(communicator)
    event = await communicator.receive_json_from(timeout=10)
    assert event["type"] == "queue" and event["generation"] == accepted["generation"]
    assert event["position"] == 1 and event["workers"] == 0
    assert "No worker is serving tiny-llama" in event["message"]
    await communicator.send_json_to({"type": "stop", "generation": accepted["generation"]})
    assert (await receive_until_done(communicator))[-1]["status"] == "stopped"
    await communicator.disconnect()
