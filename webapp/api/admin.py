from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from webapp.accounts.models import User
from webapp.api import keys
from webapp.api.models import ApiBatch, ApiKey, GroupKeyAccess


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "expires_at", "state")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = (
        "prefix",
        "hashed",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "expiry_recorded",
    )
    actions = ("revoke_selected",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are made on the API keys page, where the secret is shown once

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = request.user
        assert isinstance(actor, User)
        count = sum(keys.revoke(key, actor) for key in queryset.select_related("user"))
        self.message_user(request, f"{count} key(s) revoked.")


@admin.register(GroupKeyAccess)
class GroupKeyAccessAdmin(admin.ModelAdmin[GroupKeyAccess]):
    list_display = ("group", "may_have_keys")


@admin.register(ApiBatch)
class ApiBatchAdmin(admin.ModelAdmin[ApiBatch]):
    list_display = ("public_id", "user", "endpoint", "job", "created_at")
    readonly_fields = (
        "public_id",
        "user",
        "job",
        "endpoint",
        "input_file",
        "output_file",
        "error_file",
        "created_at",
    )
