"""Result: a one-shot request (a summary, a translation, an image's labels) in a user's
history. The work itself is its Generation; this row says it came from the studio pages
(batch items and chat replies are generations too) and gives it a title for the list."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Kind(models.TextChoices):
    SUMMARIZE = "summarize", "Summary"
    TRANSLATE = "translate", "Translation"
    CLASSIFY_IMAGE = "classify_image", "Image labels"


class Result(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="studio_results"
    )
    # Deleting the generation (e.g. with the user's data) removes the result with it.
    generation = models.OneToOneField(
        "inference.Generation", on_delete=models.CASCADE, related_name="studio_result"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    title = models.CharField(max_length=200)
    file_name = models.CharField(max_length=255, blank=True, help_text="The uploaded file's name.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind}: {self.title}"
