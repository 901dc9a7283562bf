"""Who may see the staff pages (moderation, operations, everyone's usage): admins (role
admin, which makes them staff) and staff. One rule, one decorator."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from webapp.accounts.models import Role, User

View = Callable[..., HttpResponseBase]


def is_staff_member(user: object) -> bool:
    return (
        isinstance(user, User)
        and user.is_active
        and (user.is_staff or user.is_superuser or user.role == Role.ADMIN)
    )


def staff_required(what: str) -> Callable[[View], View]:
    """A view for staff only: anonymous visitors go to the login page; signed-in people
    who are not staff get 403 saying "Only administrators can <what>."."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not is_staff_member(request.user):
                raise PermissionDenied(f"Only administrators can {what}.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
