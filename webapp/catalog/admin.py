from django.contrib import admin

from webapp.catalog.models import ModelEntry


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin[ModelEntry]):
    list_display = (
        "name",
        "task",
        "backend",
        "quantization",
        "device",
        "queue",
        "enabled",
        "is_default",
        "status",
    )
    list_filter = ("task", "backend", "quantization", "enabled")
    search_fields = ("name", "source", "description")
    filter_horizontal = ("allowed_groups",)
    readonly_fields = ("last_error", "last_error_at", "last_loaded_at", "updated_at")

    @admin.display(description="worker status")
    def status(self, entry: ModelEntry) -> str:
        if entry.last_error:
            return f"error: {entry.last_error[:120]}"
        if entry.last_loaded_at:
            return "loaded"
        return "not loaded yet"
