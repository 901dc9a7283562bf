"""Every change to a policy, a rule or the allow-list changes the configuration token, so
that each process rebuilds its filter on its next check (see config.py)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from webapp.moderation.models import AllowedPhrase, ConfigVersion, Policy, Rule


@receiver(post_save, sender=Policy)
@receiver(post_save, sender=Rule)
@receiver(post_save, sender=AllowedPhrase)
@receiver(post_delete, sender=Policy)
@receiver(post_delete, sender=Rule)
@receiver(post_delete, sender=AllowedPhrase)
def configuration_changed(sender: Any, **kwargs: Any) -> None:
    ConfigVersion.bump()
