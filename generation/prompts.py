"""Turn a system prompt and a conversation into model input ids with the chat template."""

from __future__ import annotations

from typing import Any, TypedDict

from generation.specs import GenerationError


class ChatTurn(TypedDict):
    role: str  # "user" | "assistant" | "system"
    content: str


def build_chat_input(
    tokenizer: Any,
    messages: list[ChatTurn],
    *,
    system: str = "",
    max_prompt_tokens: int,
    model_name: str = "model",
) -> list[int]:
    """Token ids for the conversation, dropping the oldest turns until it fits.

    The latest turn is always kept; if it alone does not fit, GenerationError says so.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationError(
            f"model {model_name!r} has no chat template and cannot be used for chat"
        )
    if not messages:
        raise GenerationError("a chat needs at least one message")
    turns = list(messages)
    while True:
        conversation: list[ChatTurn] = [{"role": "system", "content": system}] if system else []
        conversation += turns
        encoded = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True
        )
        ids: list[int] = list(
            encoded["input_ids"]
            if isinstance(encoded, dict) or hasattr(encoded, "keys")
            else encoded
        )
        if len(ids) <= max_prompt_tokens:
            return ids
        if len(turns) == 1:
            raise GenerationError(
                f"the message is too long for model {model_name!r}: {len(ids)} tokens, "
                f"at most {max_prompt_tokens} fit with the requested reply length"
            )
        turns = turns[1:]
