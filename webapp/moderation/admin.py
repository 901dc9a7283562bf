"""Moderation in the Django admin: policies, rules and the allow-list are edited here (each
change is audited and in force from the next check); events, strikes, suspensions and the
audit trail can be looked at (the review queue at /moderation/ is where they are acted on)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from webapp.accounts.models import User
from webapp.moderation import services
from webapp.moderation.models import (
    AllowedPhrase,
    AuditEntry,
    ModerationEvent,
    Policy,
    Rule,
    Strike,
    Suspension,
)


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


class AuditedAdmin(admin.ModelAdmin[Any]):
    """Writes an audit entry for every add, change and delete made in the admin."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        changed = ", ".join(form.changed_data) if change else ""
        name = obj._meta.model_name
        services.audit(
            _actor(request),
            f"{name}.{'change' if change else 'add'}",
            f"{'changed' if change else 'added'} {name} {obj}"
            + (f" ({changed})" if changed else ""),
            target=obj,
            details={"changed": list(form.changed_data)},
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self._audit_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self._audit_delete(request, obj)
        super().delete_queryset(request, queryset)

    @staticmethod
    def _audit_delete(request: HttpRequest, obj: Model) -> None:
        name = obj._meta.model_name
        services.audit(_actor(request), f"{name}.delete", f"deleted {name} {obj}", target=obj)


@admin.register(Policy)
class PolicyAdmin(AuditedAdmin):
    list_display = (
        "name",
        "group",
        "block_categories",
        "flag_categories",
        "flag_threshold",
        "block_threshold",
        "output_check",
        "classifiers",
        "updated_at",
    )
    filter_horizontal = ("classifier_models",)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("classifier_models")

    @admin.display(description="classifiers")
    def classifiers(self, obj: Policy) -> str:
        names = [entry.name for entry in obj.classifier_models.all()]
        if obj.use_classifier:
            names.insert(0, "built-in")
        return ", ".join(names) or "none (rules only)"


@admin.register(Rule)
class RuleAdmin(AuditedAdmin):
    list_display = ("rule_id", "category", "kind", "action", "enabled", "updated_at")
    list_filter = ("category", "kind", "enabled")
    search_fields = ("rule_id", "patterns", "description")


@admin.register(AllowedPhrase)
class AllowedPhraseAdmin(AuditedAdmin):
    list_display = ("phrase", "note", "created_by", "created_at")
    search_fields = ("phrase",)
    readonly_fields = ("created_by", "source_event")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = _actor(request)
        super().save_model(request, obj, form, change)


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModerationEvent)
class ModerationEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "direction",
        "task",
        "action",
        "category",
        "review_status",
    )
    list_filter = ("review_status", "direction", "action", "category")
    search_fields = ("user__username", "text")


@admin.register(Strike)
class StrikeAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "reason", "created_by")


@admin.register(Suspension)
class SuspensionAdmin(ReadOnlyAdmin):
    list_display = ("user", "reason", "created_at", "created_by", "lifted_at", "lifted_by")
    list_filter = ("lifted_at",)
    actions = ["lift_suspensions"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None  # the list and its action; no editing of a suspension itself

    @admin.action(description="Lift the selected suspensions")
    def lift_suspensions(self, request: HttpRequest, queryset: QuerySet[Suspension]) -> None:
        actor = _actor(request)
        assert actor is not None
        lifted = 0
        for suspension in queryset.filter(lifted_at__isnull=True):
            services.lift_suspension(suspension, actor)
            lifted += 1
        self.message_user(request, f"Lifted {lifted} suspension(s).", messages.SUCCESS)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "action", "target_type", "target_id", "summary")
    list_filter = ("action",)
    search_fields = ("actor_name", "subject_name", "summary")
