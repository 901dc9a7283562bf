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
MAX_TITLE_WORDS = 6
# Words a title does not end on ("Python function that" reads as cut off).
DANGLING = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "of", "to", "in", "on", "at", "by", "for",
    "from", "with", "into", "about", "as", "than", "that", "which", "who", "whom", "whose",
    "this", "these", "those", "is", "are", "was", "were", "be", "been", "being", "it", "its",
    "your", "my", "our", "their", "his", "her", "if", "when", "while", "so", "because", "how",
    "what",
})  # fmt: skip
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
            counted=False,  # the studio's own follow-up: no quota refuses it
        )
    except Refused:  # suspended meanwhile, or the model is no longer theirs: no title
        return None


def clean_title(text: str) -> str:
    """A short, whole title from what the model wrote: its first line and first sentence,
    without quotes, markup, a 'Title:' label or trailing punctuation, at most
    MAX_TITLE_WORDS words and MAX_TITLE_CHARS characters, never cut inside a word and not
    ending on a word like "that" or "the"."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = re.sub(r"^\s*(title\s*:\s*)", "", line, flags=re.IGNORECASE)
    line = " ".join(re.sub(r"[*_`#]", "", line).split())
    line = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]  # the first sentence
    return whole_words(line.strip(QUOTES + " .:;,!?"), MAX_TITLE_WORDS, MAX_TITLE_CHARS)


def whole_words(text: str, max_words: int, max_chars: int) -> str:
    """The first words of `text` that fit both limits, without dangling ones at the end."""
    words: list[str] = []
    for word in text.split()[:max_words]:
        if len(" ".join([*words, word])) > max_chars:
            break
        words.append(word)
    while len(words) > 1 and words[-1].lower().strip(QUOTES + ",;:") in DANGLING:
        words.pop()
    return " ".join(words).strip(QUOTES + " ,;:-")


def provisional_title(content: str) -> str:
    """The title a conversation has until the model writes one: its first message, cut
    after a whole word when it is long."""
    line = " ".join(content.split())
    if len(line) <= MAX_TITLE_CHARS:
        return line
    cut = whole_words(line, MAX_TITLE_CHARS, MAX_TITLE_CHARS - 1) or line[: MAX_TITLE_CHARS - 1]
    return cut + "…"


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
