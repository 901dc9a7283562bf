"""Who may use which model, and what workers report about loading them."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.inference.refusals import ModelUnavailable


def usable_models(user: User, task: str) -> QuerySet[ModelEntry]:
    models = ModelEntry.objects.filter(task=task, enabled=True)
    if user.role == "admin":
        return models
    return models.filter(
        Q(allowed_groups__isnull=True) | Q(allowed_groups__in=user.groups.all())
    ).distinct()


def usable_model(user: User, task: str, model_id: int | None) -> ModelEntry:
    """The model a request asked for (or the task's default), if this user may use it;
    ModelUnavailable otherwise."""
    models = usable_models(user, task)
    if model_id is None:
        ready = models.filter(preparing=False)
        entry = ready.filter(is_default=True).first() or ready.first()
        if entry is None:
            raise ModelUnavailable(f"No {task} model is available to you.")
        return entry
    entry = models.filter(pk=model_id).first()
    if entry is None:
        raise ModelUnavailable("That model does not exist or is not available to you.")
    if entry.preparing:
        raise ModelUnavailable(
            f"{entry.name} is still being prepared on this machine (a few minutes after the "
            "first start); choose another model, or try again shortly."
        )
    return entry


def record_load_error(entry_id: int, message: str) -> None:
    ModelEntry.objects.filter(pk=entry_id).update(last_error=message, last_error_at=timezone.now())


def record_loaded(entry_id: int) -> None:
    ModelEntry.objects.filter(pk=entry_id).update(
        last_error="", last_error_at=None, last_loaded_at=timezone.now()
    )


def register_local_model(
    *,
    name: str,
    folder: str,
    task: str,
    quantization: str,
    description: str,
    make_default: bool,
    backend: str = "transformers",
    fields: dict[str, Any] | None = None,
    preparing: bool = False,
) -> tuple[ModelEntry, bool]:
    """Register (or refresh the source of) a local model; returns (entry, created).
    An entry an admin has edited keeps their choices; only the folder follows the models dir,
    and `preparing` says whether the folder is still being prepared (e.g. trained).
    `fields` are further catalog fields a new entry starts with (e.g. sampling defaults)."""
    entry, created = ModelEntry.objects.get_or_create(
        name=name,
        defaults={
            "task": task,
            "source": folder,
            "backend": backend,
            "quantization": quantization,
            "device": "cpu",
            "description": description,
            "preparing": preparing,
            **(fields or {}),
        },
    )
    if not created and (entry.source != folder or entry.preparing != preparing):
        entry.source, entry.preparing = folder, preparing
        entry.save(update_fields=["source", "preparing", "updated_at"])
    if make_default and not ModelEntry.objects.filter(task=task, is_default=True).exists():
        entry.is_default = True
        entry.save()
    return entry, created
