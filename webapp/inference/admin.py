from django.contrib import admin

from webapp.inference.models import Generation


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin[Generation]):
    list_display = ("id", "task", "user", "model_name", "status", "queued_at", "completion_tokens")
    list_filter = ("task", "status", "model_name")
    search_fields = ("output", "user__username")
    readonly_fields = [f.name for f in Generation._meta.fields]
