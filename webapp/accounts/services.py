"""Account actions: sign-up, approval, and the first admin."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from webapp.accounts.models import Role, Theme, User


def sign_up(username: str, password: str, email: str = "") -> User:
    role = Role.USER if settings.ATELIER_OPEN_SIGNUP else Role.PENDING
    return User.objects.create_user(username=username, password=password, email=email, role=role)


def approve(users: Iterable[User]) -> int:
    """Make pending users full users; returns how many changed."""
    changed = 0
    with transaction.atomic():
        for user in users:
            if user.role == Role.PENDING:
                user.role = Role.USER
                user.save(update_fields=["role"])
                changed += 1
    return changed


def waiting_for_approval() -> QuerySet[User]:
    """Accounts that signed up and wait for an admin (refused ones are disabled)."""
    return User.objects.filter(role=Role.PENDING, is_active=True).order_by("date_joined")


def refuse(users: Iterable[User]) -> int:
    """Refuse pending sign-ups: the accounts are disabled (kept, so that an admin can
    still approve one later in Admin → Users); returns how many changed."""
    changed = 0
    with transaction.atomic():
        for user in users:
            if user.role == Role.PENDING and user.is_active:
                user.is_active = False
                user.save(update_fields=["is_active"])
                changed += 1
    return changed


def set_theme(user: User, theme: str) -> None:
    """Remember the user's colour theme; ValueError for one that does not exist."""
    user.theme = Theme(theme)
    user.save(update_fields=["theme"])


def ensure_admin(username: str, password: str | None) -> tuple[User, str | None]:
    """Create the first admin if no admin exists. Returns the admin and the password when
    one was generated (so it can be shown once), else None."""
    existing = User.objects.filter(role=Role.ADMIN).order_by("id").first()
    if existing is not None:
        return existing, None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    user = User.objects.create_superuser(username=username, password=password, email="")
    return user, generated
