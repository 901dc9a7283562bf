"""Chat actions: post a message, regenerate a reply, edit a message (both branch the
conversation), move between branches, and read a user's conversations.

Messages form a tree. A conversation shows one path through it, from the root to its
`current_leaf`; every action that starts a reply moves `current_leaf` to that reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from generation.prompts import ChatTurn
from generation.specs import SamplingParams, Task
from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_model
from webapp.chat.models import Conversation, Message, Role, TitleSource
from webapp.inference import services as inference
from webapp.moderation import services as moderation


class NotAllowed(Exception):
    """The user may not do this (e.g. an account pending approval)."""


class Suspended(NotAllowed):
    """The account is suspended by moderation; the message says why."""


class InputBlocked(Exception):
    """The message was stored, but the content policy blocked it: no reply was started and
    the message is never sent to a model (it is kept for review)."""

    def __init__(
        self, posted_to: Conversation, message: Message, created: bool, category: str
    ) -> None:
        self.conversation = posted_to
        self.user_message = message
        self.created_conversation = created
        self.category = category
        self.message = (
            f"Your message was blocked by the content policy ({category or 'content'}) and "
            "was not sent to the model. It is kept for review by an administrator."
        )
        super().__init__(self.message)


BLOCKED_TITLE = "Blocked message"


class NotFound(Exception):
    """No such object for this user (another user's ids look exactly like missing ones)."""


class BadRequest(Exception):
    """The request names real objects but cannot be done (e.g. regenerate a user message)."""


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
    messages = {m.pk: m for m in conversation.messages.select_related("generation")}
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
    line = " ".join(content.split())
    return line[:60] + ("…" if len(line) > 60 else "")


def _start_reply(
    user: User,
    conversation: Conversation,
    user_message: Message,
    model: ModelEntry,
    params: SamplingParams,
    history: list[Message] | None = None,
) -> Message:
    """Queue the assistant's reply to user_message (the history is the path to it: pass
    it when it is at hand, the path before user_message) and make that reply the
    conversation's current leaf. Runs inside the caller's transaction; user_message has
    just passed the input check."""
    if history is None:
        messages = {m.pk: m for m in conversation.messages.select_related("generation")}
        history = _path_to(messages, user_message)[:-1]
    path = [*history, user_message]
    earlier = [m.pk for m in history if m.role == Role.USER]
    blocked = moderation.blocked_inputs(earlier) if earlier else {}
    turns: list[ChatTurn] = [
        {"role": m.role, "content": m.text}
        for m in path
        if m.pk not in blocked and (m.text or m.role == Role.USER)
    ]
    generation = inference.create_generation(
        user=user,
        model=model,
        task=Task.CHAT,
        input={"system": conversation.system_prompt, "messages": turns},
        params=params.to_dict(),
    )
    reply = Message.objects.create(
        conversation=conversation, parent=user_message, role=Role.ASSISTANT, generation=generation
    )
    conversation.current_leaf = reply
    conversation.model = model
    conversation.save(update_fields=["current_leaf", "model", "system_prompt", "updated_at"])
    return reply


def _locked_conversation(user: User, conversation_id: int) -> Conversation:
    found = Conversation.objects.select_for_update().filter(user=user, pk=conversation_id).first()
    if found is None:
        raise NotFound("No such conversation.")
    return found


def check_can_generate(user: User) -> None:
    """Refuse pending or disabled accounts (NotAllowed), suspended ones (Suspended) and
    users at their limit of generations in progress (inference.LimitReached)."""
    if not user.can_generate:
        raise NotAllowed(user.why_cannot_generate)
    suspension = moderation.active_suspension(user)
    if suspension is not None:
        raise Suspended(moderation.suspension_message(suspension))
    inference.check_concurrency(user)


SYSTEM_PROMPT_TASK = "chat:system"  # how a system prompt's check is labelled for reviewers


def _check_input(
    user: User, content: str, system: str | None, current_system: str
) -> moderation.Checked:
    """Check the message, and the system prompt when it is new or changed (it reaches the
    model too); the more severe verdict decides. Every check is recorded."""
    checked = moderation.check_input(user, content, task=Task.CHAT)
    if system and system.strip() and system != current_system:
        of_system = moderation.check_input(user, system, task=SYSTEM_PROMPT_TASK)
        if of_system.verdict.action.severity > checked.verdict.action.severity:
            return moderation.Checked(
                of_system.verdict, of_system.policy, of_system.event, checked.event
            )
        return moderation.Checked(checked.verdict, checked.policy, checked.event, of_system.event)
    return checked


def _blocked(
    conversation: Conversation, message: Message, created: bool, checked: moderation.Checked
) -> InputBlocked:
    """Show the blocked message as the end of the branch (to its author only). A system
    prompt sent with it is not kept (it may be what was blocked): the next message brings
    it again, and it is checked again."""
    conversation.current_leaf = message
    conversation.save(update_fields=["current_leaf", "updated_at"])
    return InputBlocked(conversation, message, created, checked.verdict.category or "")


def blocked_on_worker(message_id: int) -> None:
    """A moderation model on the worker blocked this user message after it was queued: a
    conversation it began is no longer titled with its text."""
    Conversation.objects.filter(
        messages__pk=message_id, messages__parent__isnull=True, title_source=TitleSource.AUTO
    ).update(title=BLOCKED_TITLE)


def post_message(
    user: User,
    *,
    content: str,
    conversation_id: int | None,
    model_id: int | None,
    system: str | None,
    params: SamplingParams,
) -> Posted:
    """Store the user's message after the visible branch and queue the assistant's reply.

    The message is checked against the content policy first: a blocked one is stored (for
    review) but starts no reply, and InputBlocked is raised once it is committed."""
    check_can_generate(user)
    model = usable_model(user, Task.CHAT, model_id)
    with transaction.atomic():
        created = conversation_id is None
        found = None if conversation_id is None else _locked_conversation(user, conversation_id)
        checked = _check_input(user, content, system, found.system_prompt if found else "")
        if found is None:
            title = BLOCKED_TITLE if checked.blocked else _title_from(content)
            conversation = Conversation.objects.create(
                user=user,
                title=title,
                model=model,
                system_prompt="" if checked.blocked else system or "",
            )
        else:
            conversation = found
            if system is not None and not checked.blocked:
                conversation.system_prompt = system
        history = [] if created else visible_path(conversation)
        user_message = Message.objects.create(
            conversation=conversation,
            parent=history[-1] if history else None,
            role=Role.USER,
            content=content,
        )
        moderation.link(checked, message_id=user_message.pk)
        if checked.blocked:
            blocked = _blocked(conversation, user_message, created, checked)
        else:
            reply = _start_reply(user, conversation, user_message, model, params, history)
            moderation.link(checked, generation_id=reply.generation_id)
    if checked.blocked:
        raise blocked
    return Posted(conversation, user_message, reply, created)


def regenerate(
    user: User, *, message_id: int, model_id: int | None, params: SamplingParams
) -> Posted:
    """A new reply beside an assistant message (a sibling), from the same history."""
    check_can_generate(user)
    model = usable_model(user, Task.CHAT, model_id)
    with transaction.atomic():
        message = message_for(user, message_id)
        if message.role != Role.ASSISTANT or message.parent_id is None:
            raise BadRequest("Only a reply to a message can be regenerated.")
        conversation = _locked_conversation(user, message.conversation_id)
        user_message = Message.objects.get(pk=message.parent_id)
        reply = _start_reply(user, conversation, user_message, model, params)
    return Posted(conversation, user_message, reply, False)


def edit(
    user: User,
    *,
    message_id: int,
    content: str,
    model_id: int | None,
    system: str | None,
    params: SamplingParams,
) -> Posted:
    """A new version of a user message (a sibling of it: a new branch) and a reply to it.
    The original message and everything after it stay, one branch away. The new version
    is checked like a new message (InputBlocked when the policy blocks it)."""
    check_can_generate(user)
    model = usable_model(user, Task.CHAT, model_id)
    with transaction.atomic():
        message = message_for(user, message_id)
        if message.role != Role.USER:
            raise BadRequest("Only your own messages can be edited.")
        conversation = _locked_conversation(user, message.conversation_id)
        checked = _check_input(user, content, system, conversation.system_prompt)
        if system is not None and not checked.blocked:
            conversation.system_prompt = system
        edited = Message.objects.create(
            conversation=conversation, parent=message.parent, role=Role.USER, content=content
        )
        moderation.link(checked, message_id=edited.pk)
        if checked.blocked:
            blocked = _blocked(conversation, edited, False, checked)
        else:
            reply = _start_reply(user, conversation, edited, model, params)
            moderation.link(checked, generation_id=reply.generation_id)
    if checked.blocked:
        raise blocked
    return Posted(conversation, edited, reply, False)
