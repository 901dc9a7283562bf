"""The plain-text prompt an RNN language model continues, made from a chat.

A character-level RNN has no chat template and follows no instructions: it continues the
text it is given in the style of its corpus. So a chat becomes the latest user message, as
written; the system prompt and earlier turns are left out (the RNN's memory is a few hundred
characters at best, and they would steer it towards their own style, not the user's text).
"""

from __future__ import annotations

from generation.prompts import ChatTurn
from generation.specs import GenerationError

MAX_PROMPT_CHARS = 2000  # more would only cost time: the state forgets older characters


def chat_to_prompt(messages: list[ChatTurn], max_chars: int = MAX_PROMPT_CHARS) -> str:
    """The latest user message (its last `max_chars` characters), for the RNN to continue."""
    for turn in reversed(messages):
        if turn["role"] == "user" and turn["content"]:
            return turn["content"][-max_chars:]
    raise GenerationError("an RNN model needs a user message to continue")
