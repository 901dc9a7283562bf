"""Chat actions: post a message (and start the reply), read a user's conversations."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from generation.prompts import ChatTurn
from generation.specs import SamplingParams, Task
from webapp.accounts.models import User
from webapp.catalog.services import usable_model
from webapp.chat.models import Conversation, Message, Role
from webapp.inference import services as inference


class NotAllowed(Exception):
    """The user may not do this (e.g. an account pending approval)."""


class NotFound(Exception):
    """No such object for this user (another user's ids look exactly like missing ones)."""


@dataclass(frozen=True)
class Posted:
    conversation: Conversation
    user_message: Message
    assistant_message: Message
    created_conversation: bool


def conversations_for(user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(user=user)


def conversation_for(user: User, conversation_id: int) -> Conversation:
    conversation = conversations_for(user).filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def visible_path(conversation: Conversation) -> list[Message]:
    """The messages shown: from the newest message back to the root, oldest first."""
    messages = {m.pk: m for m in conversation.messages.select_related("generation")}
    if not messages:
        return []
    newest = max(messages.values(), key=lambda m: (m.created_at, m.pk))
    path: list[Message] = []
    node: Message | None = newest
    while node is not None:
        path.append(node)
        node = messages.get(node.parent_id) if node.parent_id else None
    return list(reversed(path))


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line[:60] + ("…" if len(line) > 60 else "")


def post_message(
    user: User,
    *,
    content: str,
    conversation_id: int | None,
    model_id: int | None,
    system: str | None,
    params: SamplingParams,
) -> Posted:
    """Store the user's message and queue the assistant's reply as a Generation."""
    if not user.can_generate:
        raise NotAllowed(user.why_cannot_generate)
    model = usable_model(user, Task.CHAT, model_id)
    with transaction.atomic():
        created = conversation_id is None
        if conversation_id is None:
            conversation = Conversation.objects.create(
                user=user, title=_title_from(content), model=model, system_prompt=system or ""
            )
        else:
            found = (
                Conversation.objects.select_for_update()
                .filter(user=user, pk=conversation_id)
                .first()
            )
            if found is None:
                raise NotFound("No such conversation.")
            conversation = found
            if system is not None:
                conversation.system_prompt = system
            conversation.model = model
            conversation.save(update_fields=["system_prompt", "model", "updated_at"])
        history = visible_path(conversation)
        parent = history[-1] if history else None
        user_message = Message.objects.create(
            conversation=conversation, parent=parent, role=Role.USER, content=content
        )
        turns: list[ChatTurn] = [
            {"role": m.role, "content": m.text} for m in history if m.text or m.role == Role.USER
        ]
        turns.append({"role": "user", "content": content})
        generation = inference.create_generation(
            user=user,
            model=model,
            task=Task.CHAT,
            input={"system": conversation.system_prompt, "messages": turns},
            params=params.to_dict(),
        )
        assistant_message = Message.objects.create(
            conversation=conversation,
            parent=user_message,
            role=Role.ASSISTANT,
            generation=generation,
        )
    return Posted(conversation, user_message, assistant_message, created)
