"""Personal API keys: create (the secret shown once), authenticate, revoke, and who may
have keys. Every key created, used for the first time, revoked or found expired is in
the moderation audit trail."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from webapp.accounts.models import Role, User
from webapp.api.models import ApiKey, GroupKeyAccess
from webapp.moderation import services as moderation

KEY_PREFIX = "atl-"
SHOWN_PREFIX_CHARS = 12  # "atl-" and 8 random characters
MAX_KEYS_PER_USER = 50
# last_used_at is written at most this often per key (not on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyActionError(Exception):
    """A key action that cannot be done; the message says why."""


class KeyRefused(Exception):
    """A request's key is missing, unknown, revoked or expired (HTTP 401)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def may_have_keys(user: User) -> bool:
    """Admins always; otherwise any of the user's groups that says yes, and when none of
    them says anything, ATELIER_API_KEYS_FOR_EVERYONE."""
    if user.role == Role.ADMIN:
        return True
    rules = list(
        GroupKeyAccess.objects.filter(group__user=user).values_list("may_have_keys", flat=True)
    )
    if not rules:
        return bool(settings.ATELIER_API_KEYS_FOR_EVERYONE)
    return any(rules)


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once, never stored


def create_key(user: User, name: str, expires_at: datetime | None = None) -> NewKey:
    name = name.strip()
    if not name:
        raise KeyActionError("Give the key a name, so that you can tell it from your others.")
    if len(name) > 100:
        raise KeyActionError("A key's name is at most 100 characters.")
    if not may_have_keys(user):
        raise KeyActionError("Your account may not have API keys; ask an administrator.")
    if expires_at is not None and expires_at <= timezone.now():
        raise KeyActionError("The expiry must be in the future.")
    if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_KEYS_PER_USER:
        raise KeyActionError(f"You have {MAX_KEYS_PER_USER} keys; revoke one first.")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=secret[:SHOWN_PREFIX_CHARS],
        hashed=hash_key(secret),
        expires_at=expires_at,
    )
    expiry = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    moderation.audit(
        user,
        "api_key.created",
        f"API key {key.prefix}… ({name}) created{expiry}",
        target=key,
        subject=user,
    )
    return NewKey(key, secret)


def keys_of(user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user)


def all_keys() -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("user")


def revoke(key: ApiKey, actor: User) -> bool:
    """Revoke the key (its owner or an admin); False if it was revoked already."""
    if actor.pk != key.user_id and actor.role != Role.ADMIN:
        raise KeyActionError("No such key.")
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=actor
    )
    if revoked:
        moderation.audit(
            actor,
            "api_key.revoked",
            f"API key {key.prefix}… ({key.name}) revoked",
            target=key,
            subject=key.user,
        )
    return bool(revoked)


def authenticate(secret: str) -> ApiKey:
    """The live key for `secret`, its use recorded; KeyRefused otherwise (401)."""
    if not secret:
        raise KeyRefused(
            "No API key: send it as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'. "
            "Create one on the API keys page.",
            "missing_api_key",
        )
    key = ApiKey.objects.select_related("user").filter(hashed=hash_key(secret)).first()
    if key is None:
        raise KeyRefused("Incorrect API key provided.", "invalid_api_key")
    if key.revoked_at is not None:
        raise KeyRefused(f"The API key {key.prefix}… was revoked.", "revoked_api_key")
    if key.is_expired:
        _record_expiry(key)
        raise KeyRefused(f"The API key {key.prefix}… has expired.", "expired_api_key")
    _record_use(key)
    return key


def _record_expiry(key: ApiKey) -> None:
    if ApiKey.objects.filter(pk=key.pk, expiry_recorded=False).update(expiry_recorded=True):
        moderation.audit(
            None,
            "api_key.expired",
            f"API key {key.prefix}… ({key.name}) expired and was refused",
            target=key,
            subject=key.user,
        )


def _record_use(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None:
        if ApiKey.objects.filter(pk=key.pk, last_used_at__isnull=True).update(last_used_at=now):
            moderation.audit(
                key.user,
                "api_key.first_use",
                f"API key {key.prefix}… ({key.name}) used for the first time",
                target=key,
                subject=key.user,
            )
    elif now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = key.last_used_at or now
