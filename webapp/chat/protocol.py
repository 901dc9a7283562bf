"""The WebSocket protocol's client messages: parsed and validated, or a ProtocolError.
docs/protocol.md describes it for people."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from generation.specs import MAX_NEW_TOKENS_LIMIT, SamplingParams

# The sampling parameters a client set, validated, under SamplingParams' names; the front
# door fills the others from the model's defaults.
Params = dict[str, Any]


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SendMessage:
    content: str
    conversation: int | None
    model: int | None
    system: str | None
    params: Params


@dataclass(frozen=True)
class Regenerate:
    message: int  # the assistant message to put a sibling beside
    model: int | None
    params: Params


@dataclass(frozen=True)
class Edit:
    message: int  # the user message to put a new version beside
    content: str
    model: int | None
    system: str | None
    params: Params


@dataclass(frozen=True)
class Subscribe:
    generation: int
    after: int


@dataclass(frozen=True)
class Stop:
    generation: int


ClientMessage = SendMessage | Regenerate | Edit | Subscribe | Stop


def parse_frame(text: str | None, data: bytes | None) -> dict[str, Any]:
    if data is not None:
        raise ProtocolError("binary_frame", "Binary frames are not supported; send JSON text.")
    if text is None:
        raise ProtocolError("bad_frame", "Empty frame.")
    if len(text.encode()) > settings.ATELIER_MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"Frames are limited to {settings.ATELIER_MAX_FRAME_BYTES} bytes."
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise ProtocolError("bad_json", "The frame is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_frame", "A frame must be a JSON object with a 'type'.")
    return value


def _id(value: Any, field: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProtocolError("bad_field", f"'{field}' must be a positive integer id.")
    return value


MAX_SEQ = 2**53  # larger `after` values cannot name an event (and Redis refuses them)
MAX_STOP_CHARS = 200


def _number(value: Any, field: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("bad_field", f"'{field}' must be a number.")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):  # also NaN and Infinity, which Python's JSON accepts
        raise ProtocolError("out_of_range", f"'{field}' must be a finite number.")
    return number


def _text(value: str, field: str) -> str:
    """Text that can be stored: no NUL (PostgreSQL refuses it) and no lone surrogate
    escapes such as "\\ud800" (not encodable as UTF-8)."""
    if "\x00" in value:
        raise ProtocolError("bad_field", f"'{field}' must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("bad_field", f"'{field}' contains an invalid character.") from None
    return value


PARAMS = {"model", "temperature", "top_p", "max_tokens", "seed", "stop", "repetition_penalty"}
FIELDS = {
    "message": {"type", "content", "conversation", "system", *PARAMS},
    "regenerate": {"type", "message", *PARAMS},
    "edit": {"type", "message", "content", "system", *PARAMS},
    "subscribe": {"type", "generation", "after"},
    "stop": {"type", "generation"},
}


def parse_client_message(frame: dict[str, Any]) -> ClientMessage:
    kind = frame.get("type")
    unknown = sorted(set(frame) - FIELDS.get(kind, set(frame))) if isinstance(kind, str) else []
    if unknown:
        raise ProtocolError(
            "unknown_field",
            f"Unknown field(s) for {kind!r}: {', '.join(name[:40] for name in unknown[:5])}"
            + (" …" if len(unknown) > 5 else "."),
        )
    if kind == "message":
        return _parse_send(frame)
    if kind == "regenerate":
        return Regenerate(
            message=_id(frame.get("message"), "message") or 0,
            model=_id(frame.get("model"), "model", optional=True),
            params=_parse_params(frame),
        )
    if kind == "edit":
        return Edit(
            message=_id(frame.get("message"), "message") or 0,
            content=_parse_content(frame),
            model=_id(frame.get("model"), "model", optional=True),
            system=_parse_system(frame),
            params=_parse_params(frame),
        )
    if kind == "subscribe":
        after = frame.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < MAX_SEQ:
            raise ProtocolError("bad_field", "'after' must be a sequence number (0 or more).")
        return Subscribe(generation=_id(frame.get("generation"), "generation") or 0, after=after)
    if kind == "stop":
        return Stop(generation=_id(frame.get("generation"), "generation") or 0)
    shown = repr(kind)[:40]  # not the client's whole frame back
    raise ProtocolError(
        "unknown_type",
        f"Unknown message type {shown}; expected one of: {', '.join(sorted(FIELDS))}.",
    )


def _parse_content(frame: dict[str, Any]) -> str:
    content = frame.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ProtocolError("bad_field", "'content' must be non-empty text.")
    _text(content, "content")
    if len(content) > settings.ATELIER_MAX_MESSAGE_CHARS:
        raise ProtocolError(
            "too_long",
            f"The message is {len(content)} characters; "
            f"the limit is {settings.ATELIER_MAX_MESSAGE_CHARS}.",
        )
    return content


def _parse_system(frame: dict[str, Any]) -> str | None:
    system = frame.get("system")
    if system is not None and not isinstance(system, str):
        raise ProtocolError("bad_field", "'system' must be text.")
    if system is not None:
        _text(system, "system")
    if system and len(system) > settings.ATELIER_MAX_SYSTEM_PROMPT_CHARS:
        raise ProtocolError(
            "too_long",
            "The system prompt is limited to "
            f"{settings.ATELIER_MAX_SYSTEM_PROMPT_CHARS} characters.",
        )
    return system


def _parse_params(frame: dict[str, Any]) -> Params:
    """The sampling fields the frame sets (checked as SamplingParams would check them)."""
    given: Params = {}
    for field, name in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("repetition_penalty", "repetition_penalty"),
    ):
        if frame.get(field) is not None:
            given[name] = _number(frame[field], field, 0.0)
    if "max_tokens" in frame:
        max_tokens = frame["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ProtocolError("bad_field", "'max_tokens' must be an integer.")
        given["max_new_tokens"] = max_tokens
    seed = frame.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ProtocolError("bad_field", "'seed' must be an integer between 0 and 2^32-1.")
        given["seed"] = seed
    if "stop" in frame:
        stop = frame["stop"]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ProtocolError("bad_field", "'stop' must be a list of strings.")
        for text in stop:
            _text(text, "stop")
            if len(text) > MAX_STOP_CHARS:
                raise ProtocolError(
                    "too_long", f"A stop string is limited to {MAX_STOP_CHARS} characters."
                )
        given["stop"] = list(stop)
    try:
        SamplingParams.from_dict(given)
    except ValueError as exc:
        raise ProtocolError(
            "out_of_range", f"{exc} (max_tokens at most {MAX_NEW_TOKENS_LIMIT})."
        ) from None
    return given


def _parse_send(frame: dict[str, Any]) -> SendMessage:
    return SendMessage(
        content=_parse_content(frame),
        conversation=_id(frame.get("conversation"), "conversation", optional=True),
        model=_id(frame.get("model"), "model", optional=True),
        system=_parse_system(frame),
        params=_parse_params(frame),
    )
