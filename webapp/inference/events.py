"""The shapes of the events a generation's stream carries (and clients receive)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class TokenEvent(TypedDict):
    type: Literal["token"]
    generation: int
    seq: int
    text: str


class StatusEvent(TypedDict):
    type: Literal["status"]
    generation: int
    seq: int
    status: str


class Timings(TypedDict):
    """When a reply was written and how fast, from its Generation's timings."""

    written_at: str | None  # ISO 8601, when it finished
    first_token_seconds: float | None  # from the request to its first token
    tokens_per_second: float | None  # generated tokens over the time spent writing them


class DoneEvent(TypedDict):
    type: Literal["done"]
    generation: int
    seq: int
    status: str  # done | stopped | failed | blocked
    finish_reason: str
    error: str
    usage: Usage
    result: NotRequired[dict[str, Any]]  # structured output (e.g. an image's labels)
    # Added by the web process when relaying: the final text and its sanitized HTML.
    text: NotRequired[str]
    html: NotRequired[str]
    timings: NotRequired[Timings]


StreamEvent = TokenEvent | StatusEvent | DoneEvent
