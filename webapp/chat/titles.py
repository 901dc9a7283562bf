"""Conversation titles written by the chat model after the first exchange.

A title request is a background Generation (priority BACKGROUND: workers take every waiting
interactive reply first, and it does not count against the user's limit). Its text replaces
the provisional title cut from the first message, unless the user has renamed the
conversation meanwhile."""

from __future__ import annotations

import re

from generation.specs import Backend, SamplingParams, Task
from webapp.chat.models import Conversation, Message, Role, TitleSource
from webapp.inference import front_door
from webapp.inference.models import Generation, Priority, Status
from webapp.inference.refusals import Refused

TITLE_TASK = "chat_title"
MAX_TITLE_CHARS = 60
QUOTES = "\"'\u201c\u201d\u2018\u2019"  # straight and curly quotes
PROMPT = (
    "Write a short title, at most six words, for a conversation that begins like this.\n\n"
    "User: {user}\n\nAssistant: {assistant}\n\nAnswer with the title only."
)


def request_title(reply: Generation) -> Generation | None:
    """After the first reply of a conversation is done, queue a title request for it."""
    if reply.status != Status.DONE or reply.model is None:
        return None
    if reply.model.backend == Backend.RNN:
        return None  # a character-level RNN continues text; it cannot write a title
    message = Message.objects.select_related("conversation", "parent").filter(generation=reply)
    found = message.first()
    if found is None or found.parent is None or found.parent.parent_id is not None:
        return None  # not the first exchange
    conversation = found.conversation
    if conversation.title_source != TitleSource.AUTO:
        return None
    if conversation.messages.filter(role=Role.ASSISTANT).count() != 1:
        return None  # regenerated or edited: the title request was made already
    prompt = PROMPT.format(user=found.parent.content[:1000], assistant=reply.output[:1000])
    try:
        # Not screened again: the exchange was checked on its way in and out.
        return front_door.submit(
            conversation.user,
            model=reply.model,
            task=TITLE_TASK,
            input={
                "system": "",
                "messages": [{"role": "user", "content": prompt}],
                "conversation": conversation.pk,
            },
            params=SamplingParams(temperature=0, max_new_tokens=16).to_dict(),
            priority=Priority.BACKGROUND,
            model_task=Task.CHAT,
        )
    except Refused:  # suspended meanwhile, or the model is no longer theirs: no title
        return None


def clean_title(text: str) -> str:
    """The first line, without quotes, a 'Title:' label or trailing punctuation."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = re.sub(r"^\s*(title\s*:\s*)", "", line, flags=re.IGNORECASE)
    line = " ".join(line.replace("*", "").split()).strip(QUOTES + " .")
    return line[:MAX_TITLE_CHARS].rstrip()


def apply_title(generation: Generation) -> bool:
    """Give the conversation the title the model wrote; True if it changed."""
    title = clean_title(generation.output)
    conversation_id = generation.input.get("conversation")
    if not title or generation.status != Status.DONE or not isinstance(conversation_id, int):
        return False
    return bool(
        Conversation.objects.filter(
            pk=conversation_id, user=generation.user, title_source=TitleSource.AUTO
        ).update(title=title, title_source=TitleSource.MODEL)
    )
