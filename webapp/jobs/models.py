"""Batch jobs: a file of documents, each summarized or translated by one Generation; or
an API batch, each item one chat or embeddings request (`JobItem.request`)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class JobTask(models.TextChoices):
    SUMMARIZE = "summarize"
    TRANSLATE = "translate"
    CHAT = "chat"  # API batches (/v1/chat/completions requests)
    EMBED = "embed"  # API batches (/v1/embeddings requests)


# The tasks of jobs made from an uploaded file of documents (the Jobs page's form).
DOCUMENT_TASKS = (JobTask.SUMMARIZE, JobTask.TRANSLATE)


class JobStatus(models.TextChoices):
    QUEUED = "queued"  # created, nothing dispatched yet
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"  # every item finished (done or failed)


class ItemStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its turn in the job
    RUNNING = "running"  # has a live generation (queued or running in a worker)
    DONE = "done"
    FAILED = "failed"  # the generation failed; can be retried
    INVALID = "invalid"  # the input could not be read: never sent to a model
    CANCELLED = "cancelled"


ITEM_FINISHED = (ItemStatus.DONE, ItemStatus.FAILED, ItemStatus.INVALID, ItemStatus.CANCELLED)


class Job(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    model = models.ForeignKey(
        "catalog.ModelEntry", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    model_name = models.CharField(max_length=100)  # kept when the catalog entry goes
    task = models.CharField(max_length=20, choices=JobTask.choices)
    options = models.JSONField(
        default=dict, help_text='e.g. {"length": "short"} or {"target": "fr", "source": ""}'
    )
    status = models.CharField(
        max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    source_name = models.CharField(max_length=255, help_text="The uploaded file's name.")
    source_format = models.CharField(max_length=10)
    total = models.PositiveIntegerField(default=0)
    done_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)  # failed and invalid
    cancelled_count = models.PositiveIntegerField(default=0)
    skipped_empty = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Why the job is paused when Atelier paused it (a quota used up, the account
    # suspended), and when a quota allows it again: it resumes by itself then.
    paused_reason = models.TextField(blank=True)
    resume_at = models.DateTimeField(null=True, blank=True)
    # The API key a Batch API job came through: its items are that key's in the usage
    # ledger, as the key's own requests are.
    api_key = models.ForeignKey(
        "api.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.task} {self.source_name} ({self.status})"

    @property
    def finished_items(self) -> int:
        return self.done_count + self.failed_count + self.cancelled_count

    @property
    def percent(self) -> int:
        return int(100 * self.finished_items / self.total) if self.total else 100


class JobItem(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField(help_text="Order in the input file, from 0.")
    external_id = models.CharField(max_length=500, help_text="The id the input file gave it.")
    text = models.TextField()
    request = models.JSONField(
        null=True,
        blank=True,
        help_text='An API item\'s generation: {"input", "params", "screened": [texts]}.',
    )
    status = models.CharField(max_length=10, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    generation = models.ForeignKey(
        "inference.Generation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The item's current generation; its result is the item's.",
    )
    output = models.TextField(blank=True)
    result = models.JSONField(
        null=True,
        blank=True,
        help_text="Of a done item: finish reason, token counts, structured output.",
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Generations created for it.")
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="jobs_item_unique_index")
        ]
        indexes = [models.Index(fields=["job", "status", "index"])]

    def __str__(self) -> str:
        return f"item {self.index} of job {self.job_id} ({self.status})"


class Upload(models.Model):
    """A file between the two steps of the new-job form (choose the file, then its column
    and options). In the database, so that any web process can serve the second step."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255)
    task = models.CharField(max_length=20, choices=JobTask.choices)
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"upload {self.name} of user {self.user_id}"
