"""Every change to a policy (its moderation models included), a rule, the allow-list or a
moderation model's catalog entry changes the configuration token, so that each process
rebuilds its filter on its next check (see config.py)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from generation.specs import Task
from webapp.catalog.models import ModelEntry
from webapp.moderation.models import AllowedPhrase, ConfigVersion, Policy, Rule


@receiver(post_save, sender=Policy)
@receiver(post_save, sender=Rule)
@receiver(post_save, sender=AllowedPhrase)
@receiver(post_delete, sender=Policy)
@receiver(post_delete, sender=Rule)
@receiver(post_delete, sender=AllowedPhrase)
def configuration_changed(sender: Any, **kwargs: Any) -> None:
    ConfigVersion.bump()


@receiver(m2m_changed, sender=Policy.classifier_models.through)
def moderation_models_changed(sender: Any, action: str, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        ConfigVersion.bump()


@receiver(post_save, sender=ModelEntry)
@receiver(post_delete, sender=ModelEntry)
def moderation_model_changed(sender: Any, instance: ModelEntry, **kwargs: Any) -> None:
    """Policies name their moderation models: a renamed or deleted one must be seen."""
    if instance.task == Task.MODERATION:
        ConfigVersion.bump()
