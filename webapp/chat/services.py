"""Chat actions: post a message, regenerate a reply, edit a message (both branch the
conversation), move between branches, and read a user's conversations.

Messages form a tree. A conversation shows one path through it, from the root to its
`current_leaf`; every action that starts a reply moves `current_leaf` to that reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from generation.prompts import ChatTurn
from generation.specs import SamplingParams, Task
from webapp.accounts.models import User
from webapp.chat.models import Conversation, Message, Role, TitleSource
from webapp.chat.titles import provisional_title
from webapp.inference import front_door
from webapp.inference.models import INPUT_BLOCKED, Generation, Status
from webapp.inference.refusals import InputBlocked, Refused

SYSTEM_PROMPT_TASK = "chat:system"  # how a system prompt's check is labelled for reviewers
BLOCKED_TITLE = "Blocked message"


class NotFound(Refused):
    """No such object for this user (another user's ids look exactly like missing ones)."""

    code = "not_found"


class BadRequest(Refused):
    """The request names real objects but cannot be done (e.g. regenerate a user message)."""

    code = "bad_request"


class MessageBlocked(InputBlocked):
    """The message was stored, but the content policy blocked it: no reply was started and
    the message is never sent to a model (it is kept for review)."""

    def __init__(
        self, blocked: InputBlocked, posted_to: Conversation, message: Message, created: bool
    ) -> None:
        super().__init__(blocked.message, category=blocked.category, checked=blocked.checked)
        self.conversation = posted_to
        self.user_message = message
        self.created_conversation = created


@dataclass(frozen=True)
class Posted:
    conversation: Conversation
    user_message: Message
    assistant_message: Message
    created_conversation: bool


@dataclass(frozen=True)
class Branch:
    """Where a message sits among its siblings (same parent, same role): index is 1-based."""

    index: int
    count: int
    previous: int | None
    next: int | None


def conversations_for(user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(user=user)


def conversation_for(user: User, conversation_id: int) -> Conversation:
    conversation = conversations_for(user).filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def message_for(user: User, message_id: int) -> Message:
    """The message if it is in one of the user's conversations; NotFound otherwise."""
    message = (
        Message.objects.select_related("conversation", "generation")
        .filter(pk=message_id, conversation__user=user)
        .first()
    )
    if message is None:
        raise NotFound("No such message.")
    return message


def _path_to(messages: dict[int, Message], leaf: Message) -> list[Message]:
    path: list[Message] = []
    node: Message | None = leaf
    while node is not None:
        path.append(node)
        node = messages.get(node.parent_id) if node.parent_id else None
    return list(reversed(path))


def visible_path(conversation: Conversation) -> list[Message]:
    """The messages shown, oldest first: the path from the root to the current leaf
    (the newest message when no leaf has been chosen)."""
    messages = {m.pk: m for m in conversation.messages.select_related("generation", "blocked_by")}
    if not messages:
        return []
    leaf = messages.get(conversation.current_leaf_id or 0) or max(
        messages.values(), key=lambda m: (m.created_at, m.pk)
    )
    return _path_to(messages, leaf)


def branches(conversation: Conversation, path: list[Message]) -> dict[int, Branch]:
    """For each message on the path, its place among its siblings."""
    siblings: dict[tuple[int | None, str], list[int]] = {}
    for pk, parent_id, role in conversation.messages.order_by("created_at", "pk").values_list(
        "pk", "parent_id", "role"
    ):
        siblings.setdefault((parent_id, role), []).append(pk)
    result = {}
    for message in path:
        ids = siblings.get((message.parent_id, message.role), [message.pk])
        at = ids.index(message.pk)
        result[message.pk] = Branch(
            index=at + 1,
            count=len(ids),
            previous=ids[at - 1] if at > 0 else None,
            next=ids[at + 1] if at + 1 < len(ids) else None,
        )
    return result


def select_branch(user: User, message_id: int) -> Conversation:
    """Show the branch through this message: its newest descendants down to a leaf."""
    message = message_for(user, message_id)
    conversation = message.conversation
    children: dict[int, list[Message]] = {}
    for m in conversation.messages.order_by("created_at", "pk"):
        if m.parent_id is not None:
            children.setdefault(m.parent_id, []).append(m)
    leaf = message
    while children.get(leaf.pk):
        leaf = children[leaf.pk][-1]
    conversation.current_leaf = leaf
    conversation.save(update_fields=["current_leaf"])
    return conversation


def _title_from(content: str) -> str:
    return provisional_title(content)


def _start_reply(
    user: User,
    conversation: Conversation,
    user_message: Message,
    model_id: int | None,
    params: SamplingParams | dict[str, Any],
    screened: list[front_door.Screened],
    history: list[Message] | None = None,
) -> Message:
    """Queue the assistant's reply to user_message through the front door (the history is
    the path to it: pass it when it is at hand, the path before user_message) and make that
    reply the conversation's current leaf. Runs inside the caller's transaction; raises
    what the front door refuses, InputBlocked when the `screened` texts are blocked."""
    if history is None:
        messages = {m.pk: m for m in conversation.messages.all()}
        history = _path_to(messages, user_message)[:-1]
    turns: list[ChatTurn] = [
        {"role": m.role, "content": m.text}
        for m in [*history, user_message]
        if m.blocked_by_id is None and (m.text or m.role == Role.USER)
    ]
    generation = front_door.submit(
        user,
        model=model_id,
        task=Task.CHAT,
        input={"system": conversation.system_prompt, "messages": turns},
        params=params.to_dict() if isinstance(params, SamplingParams) else dict(params),
        screened=screened,
    )
    reply = Message.objects.create(
        conversation=conversation, parent=user_message, role=Role.ASSISTANT, generation=generation
    )
    conversation.current_leaf = reply
    conversation.model_id = generation.model_id
    conversation.save(update_fields=["current_leaf", "model", "system_prompt", "updated_at"])
    return reply


def _locked_conversation(user: User, conversation_id: int) -> Conversation:
    found = Conversation.objects.select_for_update().filter(user=user, pk=conversation_id).first()
    if found is None:
        raise NotFound("No such conversation.")
    return found


def _screened(
    content: str, system: str | None, current_system: str, history: list[Message]
) -> list[front_door.Screened]:
    """The message, and the system prompt when it is new or changed (it reaches the model
    too), with the reply it answers as the reviewer's context."""
    context = history[-1].text if history else ""
    texts = [front_door.Screened(content, Task.CHAT, context)]
    if system and system.strip() and system != current_system:
        texts.append(front_door.Screened(system, SYSTEM_PROMPT_TASK))
    return texts


def _reply_or_blocked(
    user: User,
    conversation: Conversation,
    user_message: Message,
    created: bool,
    model_id: int | None,
    params: SamplingParams | dict[str, Any],
    screened: list[front_door.Screened],
    history: list[Message] | None = None,
) -> Message | MessageBlocked:
    """The queued reply; or, when the policy blocks the input, the blocked message shown as
    the end of the branch (to its author only). A system prompt sent with it is not kept
    (it may be what was blocked): the next message brings it again, and it is checked
    again. Inside the caller's transaction, so the blocked message is kept for review."""
    try:
        return _start_reply(user, conversation, user_message, model_id, params, screened, history)
    except InputBlocked as blocked:  # raised before anything of the reply was stored
        user_message.blocked_by = blocked.checked.event  # the verdict that decided
        user_message.save(update_fields=["blocked_by"])
        conversation.current_leaf = user_message
        fields = ["current_leaf", "updated_at"]
        if created:
            conversation.title, conversation.system_prompt = BLOCKED_TITLE, ""
            fields += ["title", "system_prompt"]
        conversation.save(update_fields=fields)
        return MessageBlocked(blocked, conversation, user_message, created)


def on_generation_finished(generation_id: int, status: str, finish_reason: str, **_: Any) -> None:
    """Receiver of `generation_finished`: a moderation model on the worker blocked a reply's
    input after it was queued. The user message is marked blocked by that verdict (later
    prompts leave it out), and a conversation it began is no longer titled with its text."""
    if status != Status.BLOCKED or finish_reason != INPUT_BLOCKED:
        return
    asked = Message.objects.filter(children__generation_id=generation_id, role=Role.USER).first()
    generation = Generation.objects.filter(pk=generation_id).first()
    if asked is None or generation is None:
        return
    event = generation.moderation_events.filter(direction="input", action="block").first()
    Message.objects.filter(pk=asked.pk, blocked_by__isnull=True).update(blocked_by=event)
    if asked.parent_id is None:
        Conversation.objects.filter(pk=asked.conversation_id, title_source=TitleSource.AUTO).update(
            title=BLOCKED_TITLE
        )


def post_message(
    user: User,
    *,
    content: str,
    conversation_id: int | None,
    model_id: int | None,
    system: str | None,
    params: SamplingParams | dict[str, Any],
) -> Posted:
    """Store the user's message after the visible branch and queue the assistant's reply.

    The message is checked against the content policy by the front door: a blocked one is
    stored (for review) but starts no reply, and MessageBlocked is raised once it is
    committed. Any other refusal stores nothing."""
    with transaction.atomic():
        created = conversation_id is None
        if conversation_id is None:
            conversation = Conversation.objects.create(
                user=user, title=_title_from(content), system_prompt=system or ""
            )
            history: list[Message] = []
            current_system = ""
        else:
            conversation = _locked_conversation(user, conversation_id)
            history = visible_path(conversation)
            current_system = conversation.system_prompt
            if system is not None:
                conversation.system_prompt = system
        user_message = Message.objects.create(
            conversation=conversation,
            parent=history[-1] if history else None,
            role=Role.USER,
            content=content,
        )
        screened = _screened(content, system, current_system, history)
        outcome = _reply_or_blocked(
            user, conversation, user_message, created, model_id, params, screened, history
        )
    if isinstance(outcome, MessageBlocked):
        raise outcome
    return Posted(conversation, user_message, outcome, created)


def regenerate(
    user: User, *, message_id: int, model_id: int | None, params: SamplingParams | dict[str, Any]
) -> Posted:
    """A new reply beside an assistant message (a sibling), from the same history."""
    with transaction.atomic():
        message = message_for(user, message_id)
        if message.role != Role.ASSISTANT or message.parent_id is None:
            raise BadRequest("Only a reply to a message can be regenerated.")
        conversation = _locked_conversation(user, message.conversation_id)
        user_message = Message.objects.get(pk=message.parent_id)
        reply = _start_reply(user, conversation, user_message, model_id, params, screened=[])
    return Posted(conversation, user_message, reply, False)


def edit(
    user: User,
    *,
    message_id: int,
    content: str,
    model_id: int | None,
    system: str | None,
    params: SamplingParams | dict[str, Any],
) -> Posted:
    """A new version of a user message (a sibling of it: a new branch) and a reply to it.
    The original message and everything after it stay, one branch away. The new version
    is checked like a new message (MessageBlocked when the policy blocks it)."""
    with transaction.atomic():
        message = message_for(user, message_id)
        if message.role != Role.USER:
            raise BadRequest("Only your own messages can be edited.")
        conversation = _locked_conversation(user, message.conversation_id)
        current_system = conversation.system_prompt
        if system is not None:
            conversation.system_prompt = system
        edited = Message.objects.create(
            conversation=conversation, parent=message.parent, role=Role.USER, content=content
        )
        messages = {m.pk: m for m in conversation.messages.select_related("generation")}
        history = _path_to(messages, edited)[:-1]
        screened = _screened(content, system, current_system, history)
        outcome = _reply_or_blocked(
            user, conversation, edited, False, model_id, params, screened, history
        )
    if isinstance(outcome, MessageBlocked):
        raise outcome
    return Posted(conversation, edited, outcome, False)
