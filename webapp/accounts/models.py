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
    """Per-group limits set by admins; a user gets the most generous of their groups'."""

    group = models.OneToOneField(
        "auth.Group", on_delete=models.CASCADE, related_name="atelier_limits"
    )
    max_concurrent_generations = models.PositiveSmallIntegerField(
        help_text="Replies a member may have queued or running at once."
    )

    class Meta:
        verbose_name = "group limits"
        verbose_name_plural = "group limits"

    def __str__(self) -> str:
        return f"limits of {self.group}"
