"""Moderation on the chat road, over the real WebSocket consumer, database and Redis: a
blocked prompt is stored for review but never becomes a Generation nor reaches a worker;
a flagged one proceeds; a blocked message is never sent to a model later; a suspended
user is refused with a clear error."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import DIRECT_QUEUE
from tests.webapp.test_chat_consumer import connect, receive_until_done, run_worker, send_message
from webapp.chat.models import Conversation, Message
from webapp.inference import dispatch
from webapp.inference.models import Generation
from webapp.moderation import services
from webapp.moderation.models import AuditEntry, ModerationEvent, Policy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]

THREAT = "I will kill you"


async def test_a_blocked_prompt_never_creates_a_generation_nor_wakes_a_worker(
    alice: Any, chat_model: Any
) -> None:
    waiting = await sync_to_async(dispatch.waiting_messages)(DIRECT_QUEUE)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "message", "content": THREAT})
    event = await communicator.receive_json_from(timeout=10)
    assert event["type"] == "blocked", event
    assert event["kind"] == "message" and event["category"] == "violence"
    assert "Blocked by the content policy (violence)" in event["message"]
    assert event["created_conversation"] is True and event["title"] == "Blocked message"
    assert event["branches"][str(event["user_message"])]["count"] == 1
    assert await communicator.receive_nothing(timeout=0.5)  # no accepted, no stream
    assert await Generation.objects.acount() == 0
    assert await sync_to_async(dispatch.waiting_messages)(DIRECT_QUEUE) == waiting
    message = await Message.objects.aget(pk=event["user_message"])
    assert message.content == THREAT and message.role == "user"  # kept for review
    moderation = await ModerationEvent.objects.aget()
    assert message.blocked_by_id == moderation.pk and moderation.generation_id is None
    assert moderation.action == "block" and moderation.direction == "input"
    conversation = await Conversation.objects.aget(pk=event["conversation"])
    assert conversation.current_leaf_id == message.pk
    await communicator.disconnect()


async def test_a_blocked_message_is_never_sent_to_the_model_later(
    alice: Any, chat_model: Any
) -> None:
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "message", "content": THREAT})
    blocked = await communicator.receive_json_from(timeout=10)
    assert blocked["type"] == "blocked"
    accepted = await send_message(
        communicator, conversation=blocked["conversation"], content="Tell me about otters"
    )
    generation = await Generation.objects.aget(pk=accepted["generation"])
    sent = [turn["content"] for turn in generation.input["messages"]]
    assert sent == ["Tell me about otters"]
    reply = await Message.objects.aget(pk=accepted["assistant_message"])
    assert reply.parent_id == accepted["user_message"]
    await run_worker(accepted["generation"])
    events = await receive_until_done(communicator)
    assert events[-1]["type"] == "done"
    await communicator.disconnect()


async def test_an_edit_that_is_blocked_starts_no_reply(alice: Any, chat_model: Any) -> None:
    communicator = await connect(alice)
    accepted = await send_message(communicator, content="Hello there")
    await run_worker(accepted["generation"])
    await receive_until_done(communicator)
    generations = await Generation.objects.acount()  # the reply, and maybe a title request
    await communicator.send_json_to(
        {"type": "edit", "message": accepted["user_message"], "content": "I will k1ll you"}
    )
    event = await communicator.receive_json_from(timeout=10)
    assert event["type"] == "blocked" and event["kind"] == "edit"
    assert event["branches"][str(event["user_message"])] == {
        "index": 2,
        "count": 2,
        "previous": accepted["user_message"],
        "next": None,
    }
    assert await Generation.objects.acount() == generations
    await communicator.disconnect()


async def test_a_flagged_prompt_proceeds_and_is_recorded(alice: Any, chat_model: Any) -> None:
    await Policy.objects.acreate(name="flag threats", flag_categories="violence")
    communicator = await connect(alice)
    accepted = await send_message(communicator, content=THREAT)
    event = await ModerationEvent.objects.aget()
    assert event.action == "flag" and event.category == "violence"
    assert event.context == ""  # the first message of a conversation answers nothing
    assert event.generation_id == accepted["generation"]
    await run_worker(accepted["generation"])
    assert (await receive_until_done(communicator))[-1]["type"] == "done"
    await communicator.disconnect()


async def test_a_suspended_user_cannot_start_a_generation(
    alice: Any, chat_model: Any, make_user: Any
) -> None:
    admin = await sync_to_async(make_user)("root", role="admin")
    await sync_to_async(services.suspend)(alice, "Repeated threats.", admin)
    communicator = await connect(alice)
    await communicator.send_json_to({"type": "message", "content": "Hello there"})
    event = await communicator.receive_json_from(timeout=10)
    assert event["type"] == "error" and event["code"] == "suspended"
    assert "suspended" in event["message"] and "Repeated threats." in event["message"]
    assert await Generation.objects.acount() == 0
    assert await Message.objects.acount() == 0
    assert await AuditEntry.objects.filter(action="suspension.create", actor=admin).aexists()
    await communicator.disconnect()


async def test_another_users_blocked_message_cannot_be_edited(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    mine = await connect(alice)
    await mine.send_json_to({"type": "message", "content": THREAT})
    blocked = await mine.receive_json_from(timeout=10)
    theirs = await connect(bob)
    await theirs.send_json_to(
        {"type": "edit", "message": blocked["user_message"], "content": "hello"}
    )
    event = await theirs.receive_json_from(timeout=10)
    assert event["type"] == "error" and event["code"] == "not_found"
    assert await mine.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()
