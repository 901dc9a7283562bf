"""A user's history: search, rename, delete, and export/import of conversations."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from webapp.accounts.models import User
from webapp.chat.models import Conversation, Message, Role, TitleSource
from webapp.chat.services import conversations_for, visible_path
from webapp.chat.titles import TITLE_TASK
from webapp.inference import services as inference
from webapp.inference.models import Generation
from webapp.inference.relay import timings_of
from webapp.moderation import services as moderation

EXPORT_FORMAT = "atelier.conversation"
EXPORT_VERSION = 1
MAX_TITLE_CHARS = 200
MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_IMPORT_MESSAGES = 5000


class HistoryError(Exception):
    """Bad input for a history action; the message says what is wrong."""


def search(user: User, query: str) -> QuerySet[Conversation]:
    """The user's conversations whose title or any message (either side) contains query."""
    conversations = conversations_for(user)
    query = query.strip()
    if not query:
        return conversations
    return conversations.filter(
        Q(title__icontains=query)
        | Q(messages__content__icontains=query)
        | Q(messages__generation__output__icontains=query)
    ).distinct()


def rename(conversation: Conversation, title: str) -> None:
    title = " ".join(title.split())
    if not title:
        raise HistoryError("A title cannot be empty.")
    if len(title) > MAX_TITLE_CHARS:
        raise HistoryError(f"A title is at most {MAX_TITLE_CHARS} characters.")
    conversation.title = title
    conversation.title_source = TitleSource.USER  # the model's title never overwrites it
    conversation.save(update_fields=["title", "title_source", "updated_at"])


def delete(conversation: Conversation) -> None:
    """Delete the conversation with its messages, their generations and stream data."""
    with transaction.atomic():
        generation_ids = list(
            conversation.messages.filter(generation__isnull=False).values_list(
                "generation_id", flat=True
            )
        )
        generation_ids += Generation.objects.filter(
            user=conversation.user, task=TITLE_TASK, input__conversation=conversation.pk
        ).values_list("pk", flat=True)
        conversation.delete()
        ids = [i for i in generation_ids if i is not None]
        transaction.on_commit(lambda: inference.delete_generations(ids))


def _turns(conversation: Conversation) -> list[dict[str, Any]]:
    turns = []
    for message in visible_path(conversation):
        turn: dict[str, Any] = {
            "role": message.role,
            "content": message.text,
            "created_at": message.created_at.isoformat(),
        }
        if message.generation is not None:
            # A reply was written when its generation finished, not when it was asked for.
            timings = timings_of(message.generation)
            turn["created_at"] = timings["written_at"] or turn["created_at"]
            turn["model"] = message.generation.model_name
            turn["status"] = message.generation.status
            turn["first_token_seconds"] = timings["first_token_seconds"]
            turn["tokens_per_second"] = timings["tokens_per_second"]
            turn["completion_tokens"] = message.generation.completion_tokens
        turns.append(turn)
    return turns


def export_json(conversation: Conversation) -> str:
    return json.dumps(
        {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "title": conversation.title,
            "system_prompt": conversation.system_prompt,
            "created_at": conversation.created_at.isoformat(),
            "messages": _turns(conversation),
        },
        ensure_ascii=False,
        indent=2,
    )


def export_markdown(conversation: Conversation) -> str:
    lines = [f"# {conversation.title}", ""]
    if conversation.system_prompt:
        lines += ["**System prompt:**", "", conversation.system_prompt, ""]
    for turn in _turns(conversation):
        who = "User" if turn["role"] == Role.USER else f"Assistant ({turn.get('model', 'model')})"
        lines += [f"## {who}", "", f"*{_when(turn)}*", "", turn["content"], ""]
    return "\n".join(lines)


def _when(turn: dict[str, Any]) -> str:
    """When a turn was written, and for a reply how fast: "2026-01-02 14:03 UTC · 0.4 s to
    first token · 23.1 tokens/s"."""
    parts = [turn["created_at"][:16].replace("T", " ") + " UTC"]
    if turn.get("first_token_seconds") is not None:
        parts.append(f"{turn['first_token_seconds']:.1f} s to first token")
    if turn.get("tokens_per_second") is not None:
        parts.append(f"{turn['tokens_per_second']:.1f} tokens/s")
    return " · ".join(parts)


IMPORT_TASK = "chat_import"  # how imported text is named in moderation records


def import_json(user: User, raw: bytes) -> Conversation:
    """A new conversation from a file that export_json wrote; HistoryError says what is wrong."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise HistoryError(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HistoryError("The file is not JSON in UTF-8.") from None
    except RecursionError:  # nested deeper than Python's stack; no export is like that
        raise HistoryError("The file is JSON nested too deeply to be a conversation.") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise HistoryError("The file is not a conversation exported from Atelier.")
    if data.get("version") != EXPORT_VERSION:
        raise HistoryError(f"Unsupported export version {data.get('version')!r}.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HistoryError("The file has no messages.")
    if len(messages) > MAX_IMPORT_MESSAGES:
        raise HistoryError(f"At most {MAX_IMPORT_MESSAGES} messages can be imported.")
    checked: list[tuple[str, str]] = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or message.get("role") not in (Role.USER, Role.ASSISTANT):
            raise HistoryError(f"Message {number} needs a role of 'user' or 'assistant'.")
        content = message.get("content")
        if not isinstance(content, str) or "\x00" in content:
            raise HistoryError(f"Message {number} needs text content.")
        checked.append((message["role"], content))
    title = data.get("title")
    system_prompt = data.get("system_prompt", "")
    if not isinstance(system_prompt, str) or "\x00" in system_prompt:
        raise HistoryError("The system prompt must be text.")
    # Imported text reaches the model as context later, so it passes the content policy
    # like typed text; a blocked message refuses the whole file (the verdict is recorded).
    texts = [("The system prompt", system_prompt)] if system_prompt else []
    texts += [(f"Message {number}", content) for number, (_, content) in enumerate(checked, 1)]
    for label, text in texts:
        verdict = moderation.check_input(user, text, task=IMPORT_TASK).verdict
        if verdict.blocked:
            raise HistoryError(
                f"{label} was blocked by the content policy ({verdict.category or 'content'}); "
                "nothing was imported."
            )
    with transaction.atomic():
        conversation = Conversation.objects.create(
            user=user,
            title=(" ".join(title.split())[:MAX_TITLE_CHARS] if isinstance(title, str) else "")
            or "Imported",
            system_prompt=system_prompt,
        )
        parent = None
        for role, content in checked:  # messages get the import's time, in file order
            parent = Message.objects.create(
                conversation=conversation, parent=parent, role=role, content=content
            )
        conversation.current_leaf = parent
        conversation.save(update_fields=["current_leaf"])
    return conversation
