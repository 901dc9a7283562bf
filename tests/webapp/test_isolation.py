"""Isolation, for every id a client can send: another user's id, or a model the user may
not use, gets exactly the answer a missing id gets (`not_found` over the WebSocket, 404 over
HTTP), changes nothing and reveals nothing. Also: a pending user cannot regenerate or edit,
regenerating a question or editing a reply is a `bad_request`, and the per-user limit of
replies in progress (raised by a group's limit) gives `limit_reached`; none of them stores
anything.

Each refusal is checked against a snapshot of every row and of this run's Redis keys, and,
where it makes sense, against the owner's control: the same frame from the owner works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from tests.webapp.test_chat_consumer import connect
from tests.webapp.test_protocol_fuzz import (  # noqa: F401 (an autouse fixture)
    quick_password_hashing,
    snapshot,
)
from webapp.accounts.models import GroupLimits, Role
from webapp.catalog.models import ModelEntry
from webapp.chat import services
from webapp.chat.models import Conversation, Message
from webapp.inference.models import Generation, Status
from webapp.inference.streams import stop_requested

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]

SECRETS = ("nightjar", "4711")  # in Alice's titles, questions and answers; nobody else sees them
UNUSED_ID = 10**7  # no row of a test gets an id this high
WATCH_EVENTS = frozenset({"queue", "running", "worker_lost"})


@dataclass(frozen=True)
class World:
    alice: Any
    bob: Any
    conversation: int  # Alice's: question -> first answer | answer -> follow-up -> waiting
    question: int
    first_answer: int  # a finished reply beside `answer` (a regenerated sibling)
    answer: int  # the finished reply on the shown branch
    follow_up: int
    waiting: int  # the reply to follow_up, still queued
    done_generation: int  # answer's
    queued_generation: int  # waiting's
    other_conversation: int  # another of Alice's conversations
    other_message: int  # its question
    bobs_conversation: int
    bobs_question: int
    bobs_answer: int
    restricted_model: int  # only Alice's group may use it
    default_model: int


def _post(user: Any, content: str, conversation: int | None = None) -> services.Posted:
    return services.post_message(
        user, content=content, conversation_id=conversation, model_id=None, system=None,
        params=SamplingParams(),
    )  # fmt: skip


def _finish(message: Message, output: str) -> None:
    assert message.generation_id is not None
    Generation.objects.filter(pk=message.generation_id).update(
        status=Status.DONE, output=output, finished_at=timezone.now()
    )


@pytest.fixture
def world(alice: Any, bob: Any, chat_model: Any) -> World:
    # Both may have many replies in progress, so the owner's controls are never limited.
    testers = Group.objects.create(name="testers")
    GroupLimits.objects.create(group=testers, max_concurrent_generations=50)
    staff = Group.objects.create(name="staff")
    alice.groups.add(testers, staff)
    bob.groups.add(testers)
    restricted = ModelEntry.objects.create(
        name="staff-only", task="chat", source=chat_model.source, queue=DIRECT_QUEUE
    )
    restricted.allowed_groups.add(staff)

    first = _post(alice, "Operation nightjar: the vault code is 4711")
    _finish(first.assistant_message, "First answer about nightjar")
    second = services.regenerate(
        alice, message_id=first.assistant_message.pk, model_id=None, params=SamplingParams()
    )
    _finish(second.assistant_message, "Remember nightjar 4711")
    follow_up = _post(alice, "And the nightjar backup?", first.conversation.pk)
    other = _post(alice, "Second nightjar file")
    _finish(other.assistant_message, "Filed under 4711")
    bobs = _post(bob, "Bob's own question")
    _finish(bobs.assistant_message, "Bob's own answer")
    return World(
        alice=alice,
        bob=bob,
        conversation=first.conversation.pk,
        question=first.user_message.pk,
        first_answer=first.assistant_message.pk,
        answer=second.assistant_message.pk,
        follow_up=follow_up.user_message.pk,
        waiting=follow_up.assistant_message.pk,
        done_generation=second.assistant_message.generation_id or 0,
        queued_generation=follow_up.assistant_message.generation_id or 0,
        other_conversation=other.conversation.pk,
        other_message=other.user_message.pk,
        bobs_conversation=bobs.conversation.pk,
        bobs_question=bobs.user_message.pk,
        bobs_answer=bobs.assistant_message.pk,
        restricted_model=restricted.pk,
        default_model=chat_model.pk,
    )


def reveals(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text.lower()]


async def ask(communicator: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    """The first event after sending frame (on a connection relaying nothing else)."""
    await communicator.send_json_to(frame)
    event: dict[str, Any] = await communicator.receive_json_from(timeout=5)
    return event


async def answer(communicator: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    """The frame's answer, `accepted` or `error`, past the events of replies relayed."""
    await communicator.send_json_to(frame)
    while True:
        event: dict[str, Any] = await communicator.receive_json_from(timeout=5)
        if event["type"] in ("accepted", "error"):
            return event


# --- Every id over the WebSocket --------------------------------------------------------


@dataclass(frozen=True)
class IdCase:
    name: str
    frame: Callable[[World, int], dict[str, Any]]  # the frame with this id in the field tested
    theirs: Callable[[World], int]  # the id Bob may not use
    control: Callable[[World], tuple[str, int]]  # who may use which id in the same frame
    control_gets: frozenset[str]  # the owner's first event


def _message(w: World, i: int) -> dict[str, Any]:
    return {"type": "message", "content": "mine now", "conversation": i}


def _regenerate(w: World, i: int) -> dict[str, Any]:
    return {"type": "regenerate", "message": i}


def _edit(w: World, i: int) -> dict[str, Any]:
    return {"type": "edit", "message": i, "content": "mine now"}


def _subscribe(w: World, i: int) -> dict[str, Any]:
    return {"type": "subscribe", "generation": i}


def _stop(w: World, i: int) -> dict[str, Any]:
    return {"type": "stop", "generation": i}


ACCEPTED = frozenset({"accepted"})
ID_CASES = [
    IdCase("message.conversation", _message, lambda w: w.conversation,
           lambda w: ("alice", w.conversation), ACCEPTED),
    IdCase("regenerate.message (a reply)", _regenerate, lambda w: w.answer,
           lambda w: ("alice", w.answer), ACCEPTED),
    IdCase("regenerate.message (a question: not_found, not bad_request)", _regenerate,
           lambda w: w.question, lambda w: ("alice", w.answer), ACCEPTED),
    IdCase("edit.message (a question)", _edit, lambda w: w.question,
           lambda w: ("alice", w.question), ACCEPTED),
    IdCase("edit.message (a reply: not_found, not bad_request)", _edit, lambda w: w.first_answer,
           lambda w: ("alice", w.follow_up), ACCEPTED),
    IdCase("subscribe.generation (finished)", _subscribe, lambda w: w.done_generation,
           lambda w: ("alice", w.done_generation), frozenset({"done"})),
    IdCase("subscribe.generation (queued)", _subscribe, lambda w: w.queued_generation,
           lambda w: ("alice", w.queued_generation), WATCH_EVENTS),
    IdCase("stop.generation", _stop, lambda w: w.queued_generation,
           lambda w: ("alice", w.queued_generation), frozenset({"done"})),
    IdCase("message.model (new conversation)",
           lambda w, i: {"type": "message", "content": "hi", "model": i},
           lambda w: w.restricted_model, lambda w: ("alice", w.restricted_model), ACCEPTED),
    IdCase("message.model (own conversation)",
           lambda w, i: {"type": "message", "content": "hi", "conversation": w.bobs_conversation,
                         "model": i},
           lambda w: w.restricted_model, lambda w: ("bob", w.default_model), ACCEPTED),
    IdCase("regenerate.model",
           lambda w, i: {"type": "regenerate", "message": w.bobs_answer, "model": i},
           lambda w: w.restricted_model, lambda w: ("bob", w.default_model), ACCEPTED),
    IdCase("edit.model",
           lambda w, i: {"type": "edit", "message": w.bobs_question, "content": "again",
                         "model": i},
           lambda w: w.restricted_model, lambda w: ("bob", w.default_model), ACCEPTED),
]  # fmt: skip


@pytest.mark.parametrize("case", ID_CASES, ids=[case.name for case in ID_CASES])
async def test_another_users_id_over_the_websocket_looks_missing(
    world: World, case: IdCase
) -> None:
    before = await sync_to_async(snapshot)()
    intruder = await connect(world.bob)
    theirs = await ask(intruder, case.frame(world, case.theirs(world)))
    missing = await ask(intruder, case.frame(world, UNUSED_ID))
    quiet = await intruder.receive_nothing(timeout=0.2)  # no relay started, nothing streamed
    await intruder.disconnect()

    assert theirs["type"] == "error" and theirs["code"] == "not_found", theirs
    assert theirs == missing  # exactly what a missing id gets
    assert not reveals(theirs["message"]), theirs
    assert quiet
    assert await sync_to_async(snapshot)() == before  # nothing stored, changed or stopped
    for generation in (world.done_generation, world.queued_generation):
        assert not await sync_to_async(stop_requested)(generation)

    # The owner's control: the same frame with an id they may use works.
    who, own_id = case.control(world)
    owner = await connect(world.alice if who == "alice" else world.bob)
    frame = case.frame(world, own_id)
    if frame["type"] == "stop":
        await owner.send_json_to(frame)
        frame = _subscribe(world, own_id)  # the stopped generation's stream ends at once
    first = await ask(owner, frame)
    await owner.disconnect()
    assert first["type"] in case.control_gets, first
    if case.name == "stop.generation":
        assert first["status"] == "stopped"


# --- Every id over HTTP -----------------------------------------------------------------


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def requests_for(conversation: int) -> list[tuple[str, str, dict[str, str]]]:
    """Every HTTP request that names a conversation: (method, url, data)."""
    return [
        ("get", reverse("chat:conversation", args=[conversation]), {}),
        ("post", reverse("chat:rename", args=[conversation]), {"title": "Mine now"}),
        ("get", reverse("chat:export", args=[conversation, "md"]), {}),
        ("get", reverse("chat:export", args=[conversation, "json"]), {}),
        ("post", reverse("chat:select", args=[conversation]), {"message": "1"}),
        ("post", reverse("chat:delete", args=[conversation]), {}),
    ]


def test_another_users_conversation_over_http_is_404_like_a_missing_one(world: World) -> None:
    intruder = client_for(world.bob)
    before = snapshot()
    for missing_id in (UNUSED_ID, 2**64):
        pairs = zip(requests_for(world.conversation), requests_for(missing_id), strict=True)
        for (method, url, data), (_, missing_url, _) in pairs:
            theirs = getattr(intruder, method)(url, data)
            missing = getattr(intruder, method)(missing_url, data)
            assert theirs.status_code == missing.status_code == 404, url
            assert theirs.content == missing.content, url
            assert not reveals(theirs.content.decode()), url
    assert snapshot() == before
    # The owner's control: the same requests work for Alice (delete last).
    owner = client_for(world.alice)
    for method, url, data in requests_for(world.conversation):
        data = {"message": str(world.first_answer)} if "select" in url else data
        response = getattr(owner, method)(url, data)
        assert response.status_code in (200, 302), (url, response.status_code)
    assert not Conversation.objects.filter(pk=world.conversation).exists()


SELECTS = [  # (who, conversation, message): a message outside the conversation, or no id
    ("bob", "bobs_conversation", "question"),  # Bob's own page, Alice's message
    ("bob", "bobs_conversation", "answer"),
    ("bob", "conversation", "answer"),  # Alice's page and message
    ("alice", "conversation", "other_message"),  # her own message, of another conversation
    ("alice", "conversation", "bobs_answer"),
    ("alice", "conversation", "not a number"),
    ("alice", "conversation", ""),
    ("alice", "conversation", "-3"),
    ("alice", "conversation", str(2**64)),
]


def test_select_refuses_a_message_outside_the_conversation(world: World) -> None:
    for who, conversation, message in SELECTS:
        user = world.alice if who == "alice" else world.bob
        before = snapshot()
        url = reverse("chat:select", args=[getattr(world, conversation)])
        response = client_for(user).post(url, {"message": str(getattr(world, message, message))})
        assert response.status_code == 404, (who, conversation, message)
        assert not reveals(response.content.decode())
        assert snapshot() == before  # neither conversation's shown branch moved


def test_selecting_an_own_message_shows_its_branch(world: World) -> None:
    """The control for the refusals above: Alice moves to the other version of her reply."""
    url = reverse("chat:select", args=[world.conversation])
    response = client_for(world.alice).post(url, {"message": str(world.first_answer)})
    assert response.status_code == 302
    shown = Conversation.objects.get(pk=world.conversation)
    assert shown.current_leaf_id == world.first_answer


def test_a_restricted_model_is_offered_only_to_its_group(world: World) -> None:
    assert "staff-only" in client_for(world.alice).get(reverse("chat:home")).content.decode()
    assert "staff-only" not in client_for(world.bob).get(reverse("chat:home")).content.decode()


# --- Who may generate, and what ---------------------------------------------------------


@pytest.mark.parametrize("account", ["pending", "disabled"])
async def test_an_account_that_may_not_generate_cannot_regenerate_or_edit(
    world: World, make_user: Any, account: str
) -> None:
    def make() -> tuple[Any, services.Posted]:
        pat = make_user("pat")
        posted = _post(pat, "Pat's question")
        _finish(posted.assistant_message, "Pat's answer")
        if account == "pending":
            pat.role = Role.PENDING
        else:
            pat.is_active = False
        pat.save()
        return pat, posted

    pat, posted = await sync_to_async(make)()
    before = await sync_to_async(snapshot)()
    communicator = await connect(pat)
    for frame in (
        {"type": "regenerate", "message": posted.assistant_message.pk},
        {"type": "edit", "message": posted.user_message.pk, "content": "Changed"},
        {"type": "message", "content": "More", "conversation": posted.conversation.pk},
    ):
        error = await ask(communicator, frame)
        assert error["type"] == "error" and error["code"] == "not_allowed", (frame, error)
        assert ("approval" if account == "pending" else "disabled") in error["message"]
    await communicator.disconnect()
    assert await sync_to_async(snapshot)() == before


async def test_regenerating_a_question_or_editing_a_reply_is_a_bad_request(world: World) -> None:
    before = await sync_to_async(snapshot)()
    communicator = await connect(world.alice)
    for frame in (
        {"type": "regenerate", "message": world.question},
        {"type": "regenerate", "message": world.follow_up},
        {"type": "edit", "message": world.answer, "content": "Changed"},
        {"type": "edit", "message": world.waiting, "content": "Changed"},
    ):
        error = await ask(communicator, frame)
        assert error["type"] == "error" and error["code"] == "bad_request", (frame, error)
    await communicator.disconnect()
    assert await sync_to_async(snapshot)() == before


# --- The per-user limit of replies in progress ------------------------------------------


async def test_the_concurrency_limit_refuses_and_a_group_limit_raises_it(
    world: World, make_user: Any
) -> None:
    carol = await sync_to_async(make_user)("carol")  # in no group: the site's default limit
    limit = settings.ATELIER_MAX_CONCURRENT_GENERATIONS
    communicator = await connect(carol)
    accepted = [
        await answer(communicator, {"type": "message", "content": f"Question {n}"})
        for n in range(limit)
    ]
    assert all(event["type"] == "accepted" for event in accepted), accepted
    first = accepted[0]

    async def refused() -> None:
        before = await sync_to_async(snapshot)()
        for frame in (
            {"type": "message", "content": "One more"},
            {"type": "message", "content": "One more", "conversation": first["conversation"]},
            {"type": "regenerate", "message": first["assistant_message"]},
            {"type": "edit", "message": first["user_message"], "content": "Changed"},
        ):
            error = await answer(communicator, frame)
            assert error["type"] == "error" and error["code"] == "limit_reached", (frame, error)
        assert await sync_to_async(snapshot)() == before

    await refused()
    # Other users are not limited by Carol's replies.
    other = await connect(world.bob)
    assert (await answer(other, {"type": "message", "content": "Mine"}))["type"] == "accepted"
    await other.disconnect()

    def join_a_group_with_a_higher_limit() -> None:
        group = Group.objects.create(name="power users")
        GroupLimits.objects.create(group=group, max_concurrent_generations=limit + 1)
        carol.groups.add(group)

    await sync_to_async(join_a_group_with_a_higher_limit)()
    raised = await answer(communicator, {"type": "message", "content": "Allowed now"})
    assert raised["type"] == "accepted", raised
    await refused()
    # A stopped reply is no longer in progress: its place is free again.
    await communicator.send_json_to({"type": "stop", "generation": first["generation"]})
    freed = await answer(
        communicator, {"type": "regenerate", "message": first["assistant_message"]}
    )
    assert freed["type"] == "accepted", freed
    await communicator.disconnect()
    busy = Generation.objects.filter(user=carol, status__in=[Status.QUEUED, Status.RUNNING])
    assert await busy.acount() == limit + 1
