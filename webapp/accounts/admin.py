from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.http import HttpRequest

from webapp.accounts import services
from webapp.accounts.models import GroupLimits, User, UserLimits


class UserLimitsInline(admin.StackedInline[UserLimits, User]):
    """An admin's override of this user's limits (empty fields: as their groups say)."""

    model = UserLimits
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name = "limits and quotas (override)"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "role", "is_active", "date_joined", "last_login")
    list_filter = ("role", "is_active", "groups")
    fieldsets = (*(BaseUserAdmin.fieldsets or ()), ("Atelier", {"fields": ("role",)}))
    actions = ["approve_users"]
    inlines = [UserLimitsInline]

    @admin.action(description="Approve selected pending users")
    def approve_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = services.approve(list(queryset))
        self.message_user(request, f"Approved {count} user(s).", messages.SUCCESS)


class GroupLimitsInline(admin.StackedInline[GroupLimits, Group]):
    model = GroupLimits
    can_delete = True
    extra = 0
    max_num = 1


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin):
    inlines = [GroupLimitsInline]
