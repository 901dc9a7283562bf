"""Template context for every page: the signed-in user's active suspension, if any, so
that base.html tells a suspended user why on every page."""

from __future__ import annotations

from django.http import HttpRequest

from webapp.accounts.models import User
from webapp.moderation import services


def suspension(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if not isinstance(user, User):
        return {}
    found = services.active_suspension(user)
    if found is None:
        return {}
    return {"suspension": found, "suspension_message": services.suspension_message(found)}
