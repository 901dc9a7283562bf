"""Users and their role: admin, user, or pending (signed up, awaiting approval)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    USER = "user", "User"
    PENDING = "pending", "Pending approval"


class Theme(models.TextChoices):
    SYSTEM = "system", "Follow the system"
    LIGHT = "light", "Light"
    DARK = "dark", "Dark"


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PENDING)
    theme = models.CharField(max_length=8, choices=Theme.choices, default=Theme.SYSTEM)

    def save(self, *args: object, **kwargs: object) -> None:
        # The admin role is what grants Django admin access; keep the flags in step.
        if self.is_superuser and self.role != Role.ADMIN:
            self.role = Role.ADMIN
        if self.role == Role.ADMIN:
            self.is_staff = self.is_superuser = True
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_pending(self) -> bool:
        return self.role == Role.PENDING

    @property
    def can_generate(self) -> bool:
        return self.is_active and self.role in (Role.ADMIN, Role.USER)

    @property
    def why_cannot_generate(self) -> str:
        if not self.is_active:
            return "Your account is disabled."
        if self.is_pending:
            return (
                "Your account is waiting for an administrator's approval. "
                "You can look around, but you cannot generate anything until then."
            )
        return ""


class GroupLimits(models.Model):
    """Per-group limits set by admins. A user in several groups gets the most generous of
    each; a limit left empty is the site's default (ATELIER_* settings) for that group."""

    group = models.OneToOneField(
        "auth.Group", on_delete=models.CASCADE, related_name="atelier_limits"
    )
    max_concurrent_generations = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Replies a member may have queued or running at once. Empty: the default.",
    )
    tokens_per_day = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Prompt and generated tokens a day. Empty: the default."
    )
    tokens_per_month = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Prompt and generated tokens a month. Empty: the default."
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Model calls a minute. Empty: the default."
    )

    class Meta:
        verbose_name = "group limits"
        verbose_name_plural = "group limits"

    def __str__(self) -> str:
        return f"limits of {self.group}"


class UserLimits(models.Model):
    """An admin's override of one user's limits: a limit set here replaces what the user's
    groups give; one left empty keeps it."""

    user = models.OneToOneField(
        "accounts.User", on_delete=models.CASCADE, related_name="limits_override"
    )
    max_concurrent_generations = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty: as the user's groups say."
    )
    tokens_per_day = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Empty: as the user's groups say."
    )
    tokens_per_month = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Empty: as the user's groups say."
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: as the user's groups say."
    )

    class Meta:
        verbose_name = "user limits"
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"limits of {self.user}"


class QuotaLock(models.Model):
    """One row per user, updated by the front door before it counts the user's usage: the
    update holds the row (PostgreSQL) or the database (SQLite) until the transaction that
    queues the request commits, so requests arriving together are counted one by one."""

    user = models.OneToOneField("accounts.User", on_delete=models.CASCADE, primary_key=True)
    checks = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"quota lock of user {self.user_id}"
