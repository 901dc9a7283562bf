"""Generation: one model call of any task, from queued to its final text and timings."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"
    BLOCKED = "blocked"


FINISHED = (Status.DONE, Status.STOPPED, Status.FAILED, Status.BLOCKED)
# The finish reason of a generation whose input a moderation model on the worker blocked.
INPUT_BLOCKED = "input_blocked"


class Priority(models.IntegerChoices):
    """Lower runs first: a user waiting for a reply goes before background work."""

    INTERACTIVE = 0
    BACKGROUND = 10


class Source(models.TextChoices):
    """The front door a generation came through, for the usage ledger."""

    WEB = "web", "Web pages"
    BATCH = "batch", "Batch jobs"
    API = "api", "API"


class Generation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations"
    )
    model = models.ForeignKey(
        "catalog.ModelEntry", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    model_name = models.CharField(max_length=100)  # kept when the catalog entry goes
    task = models.CharField(max_length=20)
    queue = models.CharField(max_length=100, default="inference")  # the model's, when queued
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.INTERACTIVE
    )
    worker = models.CharField(max_length=200, blank=True, help_text="Who is running it.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker claimed it.")
    input = models.JSONField(help_text="What the model is given, e.g. system prompt and messages.")
    params = models.JSONField(default=dict, help_text="Sampling parameters.")
    output = models.TextField(blank=True)
    result = models.JSONField(
        null=True, blank=True, help_text="Structured output, e.g. an image's labels."
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Usage. Text tasks: the prompt's and the output's tokens; embeddings and moderation:
    # their input's tokens (prompt_tokens); image classification: the images.
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    # What the token quotas count for it until it finishes (then its real tokens).
    reserved_tokens = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    api_key = models.ForeignKey(
        "api.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-queued_at"]
        indexes = [
            models.Index(fields=["user", "-queued_at"]),
            models.Index(fields=["queue", "status"]),
            models.Index(fields=["queued_at"]),  # the usage dashboard's date range
            # The usage dashboard's time to first token per model, read in its order.
            models.Index(
                models.F("model_name"),
                models.ExpressionWrapper(
                    models.F("first_token_at") - models.F("queued_at"),
                    output_field=models.DurationField(),
                ),
                include=["queued_at", "first_token_at", "user", "source"],
                condition=models.Q(first_token_at__isnull=False),
                name="inference_gen_first_token_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED
