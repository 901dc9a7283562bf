"""Why a generation was not started: one small family of refusals, each with a stable `code`
and a message that can be shown to the user as it is.

The front door (`inference.front_door`) raises them; each front end translates them in one
place (the chat socket into `error` frames, the pages into a form error, batch jobs into an
item's error or a paused job, the API into HTTP statuses). Nothing here imports anything,
so every app may raise or catch them.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """The request cannot be started; `message` says why, for the user."""

    code = "refused"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class NotAllowed(Refused):
    """The account may not generate (pending approval, disabled)."""

    code = "not_allowed"


class Suspended(NotAllowed):
    """The account is suspended by moderation; the message says why and until when."""

    code = "suspended"


class LimitReached(Refused):
    """The user already has as many requests in progress as they may."""

    code = "limit_reached"


class ModelUnavailable(Refused):
    """The model does not exist, is disabled, serves another task, or this user may not
    use it (another user's private model looks exactly like a missing one)."""

    code = "model_unavailable"


class InvalidInput(Refused):
    """The input cannot be run as given (empty, too long, an unknown option, a language
    pair the model does not translate)."""

    code = "invalid_input"


class InputBlocked(Refused):
    """The content policy blocked the input: nothing was queued. `checked` is the
    moderation verdict with the events recorded for review (a front end may link them to
    what it stored, e.g. the chat message)."""

    code = "input_blocked"

    def __init__(self, message: str, *, category: str, checked: Any) -> None:
        super().__init__(message)
        self.category = category
        self.checked = checked


class QuotaExceeded(Refused):
    """A quota of the user's is used up: requests per minute (`rate_limit_exceeded`) or
    tokens per day or month (`insufficient_quota`). `limit` names which (e.g.
    "tokens_per_day"), `allowed` is its value, and `resets_at` (an aware datetime) when it
    allows again; the message says both."""

    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, code: str, limit: str, allowed: int, resets_at: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.limit = limit
        self.allowed = allowed
        self.resets_at = resets_at
