from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from webapp.accounts import services
from webapp.accounts.models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "role", "is_active", "date_joined", "last_login")
    list_filter = ("role", "is_active", "groups")
    fieldsets = (*(BaseUserAdmin.fieldsets or ()), ("Atelier", {"fields": ("role",)}))
    actions = ["approve_users"]

    @admin.action(description="Approve selected pending users")
    def approve_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = services.approve(list(queryset))
        self.message_user(request, f"Approved {count} user(s).", messages.SUCCESS)
