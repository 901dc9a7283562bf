"""Template helpers of the top bar: how many sign-ups wait for an admin."""

from __future__ import annotations

from django import template

from webapp.accounts import services
from webapp.accounts.models import Role, User

register = template.Library()


@register.simple_tag(takes_context=True)
def waiting_for_approval(context: template.Context) -> int:
    """The number of accounts waiting for approval, for admins (0 for everyone else)."""
    user = context.get("user")
    if not isinstance(user, User) or user.role != Role.ADMIN:
        return 0
    return services.waiting_for_approval().count()
