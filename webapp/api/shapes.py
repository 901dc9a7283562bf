"""The API's answers in the shapes of the OpenAI API reference, built from a generation's
`done` events (and stream pieces). Pure functions."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from webapp.inference.models import INPUT_BLOCKED, Status

CHAT = "chat.completion"
CHAT_CHUNK = "chat.completion.chunk"
TEXT = "text_completion"


def finish_reason(done: dict[str, Any]) -> str:
    """OpenAI's finish reason for a finished generation: content_filter when moderation
    blocked its input or cut its output, length at the token limit, stop otherwise."""
    if done.get("status") == Status.BLOCKED or done.get("finish_reason") in (
        "blocked",
        INPUT_BLOCKED,
    ):
        return "content_filter"
    if done.get("finish_reason") == "length":
        return "length"
    return "stop"


def usage(dones: list[dict[str, Any]]) -> dict[str, int]:
    """Token counts of a request: its prompt once, every choice's completion."""
    prompt = max((d.get("usage", {}).get("prompt_tokens", 0) for d in dones), default=0)
    completion = sum(d.get("usage", {}).get("completion_tokens", 0) for d in dones)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def failure(dones: list[dict[str, Any]]) -> str | None:
    """The error of the first choice that failed (None if none did)."""
    for done in dones:
        if done.get("type") == "error":
            return str(done.get("message") or "The reply's stream was interrupted.")
        if done.get("status") == Status.FAILED:
            return str(done.get("error") or "The generation failed.")
    return None


def completion(*, kind: str, id: str, model: str, dones: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole chat.completion or text_completion."""
    choices = []
    for index, done in enumerate(dones):
        text = done.get("text") or ""
        choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason(done)}
        if kind == CHAT:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
            choice["logprobs"] = None
        else:
            choice["text"] = text
            choice["logprobs"] = None
        choices.append(choice)
    return {
        "id": id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage(dones),
    }


def blocked_completion(*, kind: str, id: str, model: str, notice: str, n: int) -> dict[str, Any]:
    """The answer to a request whose input the content policy blocked (nothing ran)."""
    dones = [{"text": notice, "status": Status.BLOCKED, "usage": {}} for _ in range(n)]
    return completion(kind=kind, id=id, model=model, dones=dones)


def chunk(
    *,
    kind: str,
    id: str,
    created: int,
    model: str,
    index: int,
    text: str | None = None,
    role: bool = False,
    finish: str | None = None,
) -> dict[str, Any]:
    """One streamed piece of choice `index` (a chat delta, or a completion's text)."""
    choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
    if kind == CHAT:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
        obj = CHAT_CHUNK
    else:
        choice["text"] = text or ""
        obj = TEXT
    return {
        "id": id,
        "object": obj,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
    }


def usage_chunk(
    *, kind: str, id: str, created: int, model: str, dones: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": id,
        "object": CHAT_CHUNK if kind == CHAT else TEXT,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage(dones),
    }


def embedding_list(
    vectors: list[list[float]], *, model: str, encoding: str, prompt_tokens: int
) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":  # little-endian float32, as OpenAI sends them
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_object(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.name,
        "object": "model",
        "created": int(entry.updated_at.timestamp()),
        "owned_by": "atelier",
        "atelier": {"task": entry.task, "description": entry.description},
    }
