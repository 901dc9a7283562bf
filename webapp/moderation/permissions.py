"""Who may run moderation: admins (role admin, which makes them staff) and staff."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from webapp.accounts.models import Role, User


def is_moderator(user: object) -> bool:
    return (
        isinstance(user, User)
        and user.is_active
        and (user.is_staff or user.is_superuser or user.role == Role.ADMIN)
    )


def moderator_required(
    view: Callable[..., HttpResponseBase],
) -> Callable[..., HttpResponseBase]:
    """Anonymous visitors go to the login page; signed-in non-admins get 403."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_moderator(request.user):
            raise PermissionDenied("Only administrators can review moderation.")
        return view(request, *args, **kwargs)

    return wrapped
